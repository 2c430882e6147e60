"""Slim U-net (ours, beyond the paper): the U-net of docs/method.md ("Networks"), every width scaled.

Why: Lighter U-net @C saves parameters but not time on a CPU: its grouped 3x3 + 1x1 pairs need
more FLOPs than U-net's dense convs and grouped convs run far below the dense-conv rate. Halving
every width keeps the dense 3x3 convs (the fast kernels) and divides the FLOPs by about four.
The width was chosen by measurement (bench/bench_latency.py, docs/performance.md).

``width`` is the first block's channel count; width 64 is exactly the paper's U-net (the test
checks that the count is U-net's 17,267,393).
"""

from __future__ import annotations

from sonoseg.networks.models.unet import REGULAR, UNet

SLIM_WIDTH = 32


def slim_unet(width: int = SLIM_WIDTH) -> UNet:
    """The paper's U-net (dense 3x3 convs throughout) with its first block ``width`` channels wide."""
    return UNet(REGULAR, REGULAR, width=width)
