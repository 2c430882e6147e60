"""A third, independent check set for design questions: pymust scans from four scanner settings unlike
the committed sets' (data/external/README.md) and unlike each other: other probes (L14-5/38, LA530,
L14-5W/60) or another centre frequency, 1 to 5 compounded plane waves, 45-65 dB displays, coarse and
fine speckle, shallow and deep fields, the five lesion types in other proportions and shapes
(SUMMARY.md). Made with the package's own simulator (sonoseg.data.simulated), not added to its SETS:
no study reads it and no study's choice looks at it.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src \\
        .venv/bin/python docs/results/quick_data/check_set_design/make_check.py OUT VARIANT...

Each VARIANT is written to OUT/<variant>/ by simulated.write_set; merge.py joins them into one folder.
"""
import logging
import sys
from dataclasses import replace

from sonoseg.data import simulated

BASE = simulated.SETS["pymust_far"]  # the fields not set below are set for every variant
PATIENTS = 10
VARIANTS = {
    # A fine linear probe at its own 7.2 MHz, five compounded plane waves: smooth, fine speckle.
    "check_a": dict(probe="L14-5/38", centre_frequency_mhz=None, depth_start_mm=3.0, depth_end_mm=25.0, rows=144,
                    cols=256, scatterers_per_mm2=10.0, plane_wave_angles_deg=(-8.0, -4.0, 0.0, 4.0, 8.0),
                    attenuation_db_cm_mhz=0.5, dynamic_range_db=50.0, median_below_top_db=24.0,
                    lesion_type_weights=(0.2, 0.2, 0.2, 0.2, 0.2), hypoechoic_contrast_db=(8.0, 18.0),
                    lesion_area_fraction=(0.04, 0.2), lesion_aspect=(1.0, 2.0), lobulation=(0.02, 0.08),
                    fat_depth_mm=(3.0, 7.0), fat_db=-8.0, fascia_db=10.0, texture_db=2.0, seed=20250),
    # A wide 192-element probe driven low (3.5 MHz), deep (8-45 mm), one plane wave, sparse scatterers,
    # a 65 dB display: coarse grain, faint lesions, thick fat.
    "check_b": dict(probe="LA530", centre_frequency_mhz=3.5, depth_start_mm=8.0, depth_end_mm=45.0, rows=176,
                    cols=224, scatterers_per_mm2=5.0, plane_wave_angles_deg=(0.0,), attenuation_db_cm_mhz=0.7,
                    dynamic_range_db=65.0, median_below_top_db=30.0, lesion_type_weights=(0.3, 0.1, 0.2, 0.2, 0.2),
                    hypoechoic_contrast_db=(5.0, 12.0), lesion_area_fraction=(0.03, 0.15), lesion_aspect=(0.8, 1.8),
                    lobulation=(0.03, 0.1), fat_depth_mm=(8.0, 14.0), fat_db=-6.0, fascia_db=12.0, texture_db=3.5,
                    seed=20251),
    # The first development set's probe driven high (9 MHz), shallow (2-20 mm), three plane waves, dense
    # scatterers, a 45 dB display; large, lobulated lesions, some taller than wide.
    "check_c": dict(probe="L11-5v", centre_frequency_mhz=9.0, depth_start_mm=2.0, depth_end_mm=20.0, rows=128,
                    cols=256, scatterers_per_mm2=16.0, plane_wave_angles_deg=(-5.0, 0.0, 5.0),
                    attenuation_db_cm_mhz=0.4, dynamic_range_db=45.0, median_below_top_db=20.0,
                    lesion_type_weights=(0.2, 0.2, 0.2, 0.2, 0.2), hypoechoic_contrast_db=(10.0, 22.0),
                    lesion_area_fraction=(0.06, 0.25), lesion_aspect=(0.7, 1.5), lobulation=(0.05, 0.14),
                    fat_depth_mm=(3.0, 6.0), fat_db=-9.0, fascia_db=9.0, texture_db=1.5, seed=20252),
    # A 60 mm wide probe at 6 MHz, one plane wave: a wide field (160 x 352 pixels), wide flat lesions,
    # mostly haloes and rims.
    "check_d": dict(probe="L14-5W/60", centre_frequency_mhz=6.0, depth_start_mm=4.0, depth_end_mm=30.0, rows=160,
                    cols=352, scatterers_per_mm2=8.0, plane_wave_angles_deg=(0.0,), attenuation_db_cm_mhz=0.6,
                    dynamic_range_db=58.0, median_below_top_db=27.0, lesion_type_weights=(0.15, 0.15, 0.25, 0.25, 0.2),
                    hypoechoic_contrast_db=(6.0, 15.0), lesion_area_fraction=(0.03, 0.18), lesion_aspect=(1.2, 2.6),
                    lobulation=(0.02, 0.1), fat_depth_mm=(5.0, 10.0), fat_db=-7.0, fascia_db=11.0, texture_db=2.5,
                    seed=20253),
}


def settings(variant: str) -> simulated.SimulationSettings:
    prefix = "PC" + variant[-1].upper()
    return replace(BASE, name=variant, patients=PATIENTS, id_prefix=prefix, **VARIANTS[variant])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = sys.argv[1]
    for variant in sys.argv[2:]:
        simulated.write_set(f"{out}/{variant}", settings(variant), overwrite=True)
