"""The analysis stage: metrics per image, the collect stage's long tables, statistics by patient,
the study's tables and the report's figures and pages, and the paper's published numbers."""
