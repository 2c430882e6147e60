# sonoseg: the comparative study of Li et al., "Lightweight U-Net for Lesion Segmentation in
# Ultrasound Images" (ISBI 2021). Read the README for targets; config/quick.yaml is the quick study.
import os
import sys

from snakemake.utils import min_version

min_version("9.0")

# The defaults: the working folder's config/config.yaml (a deployed workflow's own copy), else this
# workflow's. Snakemake skips a configfile directive's file that is not there when --configfile is given,
# without a word: a study run from another folder lost config.yaml's external sets and defaults.
DEFAULTS = "config/config.yaml"
if not os.path.exists(DEFAULTS):
    DEFAULTS = os.path.join(workflow.basedir, DEFAULTS)
    print(
        f"sonoseg: no config/config.yaml in the working folder {os.getcwd()}: the defaults are "
        f"{DEFAULTS}; relative paths in the config are relative to the working folder",
        file=sys.stderr,
    )


configfile: DEFAULTS


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/report.smk"


# For the report's front page only (workflow/report/workflow.rst reads snakemake.config): the data the
# results were made from, and whether it is today's. Set after every rule has read the config.
config["report_provenance"] = report_provenance()


FINAL_OUTPUTS = get_final_outputs()  # what `all` makes, and what the note below compares the folder with


rule all:
    default_target: True
    input:
        FINAL_OUTPUTS,


# What the study folder holds that this config no longer makes, said at planning (a dry run shows it too; a
# run with nothing to do as well, which no onsuccess hook would reach).
note_outputs_left_by_other_configs(FINAL_OUTPUTS)
