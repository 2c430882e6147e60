"""The study glue: the run sheet (every run of a study as one row), where a study keeps each file,
and the `sonoseg` command."""
