"""sonoseg: the comparative study of Li et al. (ISBI 2021), lightweight U-nets for ultrasound lesion segmentation."""

__version__ = "0.1.0"
