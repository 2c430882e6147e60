"""Stand-in for medpy.metric.binary on the GPU machine, which has no medpy: dc as medpy computes it
(2 |A and B| / (|A| + |B|), 0 when both are empty); hd95 is not available (not needed by this study)."""
import numpy as np


def dc(result, reference):
    result = np.atleast_1d(result.astype(bool))
    reference = np.atleast_1d(reference.astype(bool))
    intersection = np.count_nonzero(result & reference)
    size = np.count_nonzero(result) + np.count_nonzero(reference)
    try:
        return 2.0 * intersection / float(size)
    except ZeroDivisionError:
        return 0.0


def hd95(*args, **kwargs):
    raise NotImplementedError("medpy stub: hd95 is not available on this machine")
