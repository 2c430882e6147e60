"""The resizing of test-time scale selection (sonoseg.serving.infer.scale_adaptive) in NumPy: the very
float32 numbers torch.nn.functional.interpolate gives on the CPU (tests/test_onnx_without_torch.py compares
them bit for bit), so that an exported graph served with ONNX Runtime selects its scale without torch, and
the torch backend's masks are those it wrote when torch resized.

``area``: torch's adaptive average pooling; each output pixel's window summed in float32 row by row,
then divided by its height and its width (torch takes a 1-px output as a mean, summed in another order:
there the last bit may differ). ``bilinear`` (align_corners=False): the source coordinate
(index + 0.5) x input / output - 0.5, at least 0, between the two nearest pixels; torch's CPU kernels
compute the weighted sum with fused multiply-adds (x86-64 with AVX2 or AVX-512: this project's
machines), in one of two forms: its four-corner kernel for outputs of up to 128 px of height plus
width, its separable kernel above. (On an x86-64 CPU without AVX2 torch rounds each product apart, so
its last bits differ there; these do not, on any machine.)"""

from __future__ import annotations

import numpy as np

# torch's CPU bilinear kernel runs the four-corner form where the output's height + width is at most this.
FOUR_CORNER_LIMIT = 128


def area(images: np.ndarray, side: int) -> np.ndarray:
    """(N, C, S, S) float32 -> (N, C, side, side): the mean over each output pixel's window (rows
    floor(i x S / side) to ceil((i + 1) x S / side), columns alike)."""
    images = np.asarray(images, np.float32)
    rows, cols = _windows(images.shape[-2], side), _windows(images.shape[-1], side)
    total = np.zeros((*images.shape[:-2], side, side), np.float32)
    for dy in range(int(rows[1].max())):
        for dx in range(int(cols[1].max())):  # in torch's order, so that the float32 sums round alike
            inside = (dy < rows[1])[:, None] & (dx < cols[1])[None, :]
            taken = images[..., np.minimum(rows[0] + dy, images.shape[-2] - 1), :]
            taken = taken[..., np.minimum(cols[0] + dx, images.shape[-1] - 1)]
            total += np.where(inside, taken, np.float32(0))
    return total / rows[1].astype(np.float32)[:, None] / cols[1].astype(np.float32)[None, :]


def _windows(size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive pooling's windows along one axis: (first input index, length) of each output index."""
    index = np.arange(side)
    start = index * size // side
    return start, -(-(index + 1) * size // side) - start


def bilinear(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, s, s) float32 -> (N, size, size), bilinear with align_corners=False."""
    maps = np.asarray(maps, np.float32)
    row0, row1, up, down = _linear_weights(maps.shape[-2], size)
    col0, col1, left, right = _linear_weights(maps.shape[-1], size)
    if 2 * size <= FOUR_CORNER_LIMIT:
        up, down, left, right = up[:, None], down[:, None], left[None, :], right[None, :]
        corners = [maps[:, r][:, :, c] for r in (row0, row1) for c in (col0, col1)]
        weights = [up * left, up * right, down * left, down * right]  # float32 products, as torch's
        total = _fma(corners[0], weights[0], corners[1] * weights[1])
        return _fma(corners[3], weights[3], _fma(corners[2], weights[2], total))
    across = _fma(maps[..., col0], left, maps[..., col1] * right)  # each input row, resized along the width
    return _fma(across[:, row0], up[:, None], across[:, row1] * down[:, None])


def _linear_weights(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output index along one axis: the two input indices and their float32 weights, as torch
    computes them (the scale in float32, the coordinate as a fused multiply-add)."""
    scale = np.float32(size) / np.float32(out)
    # scale x (index + 0.5) is exact in float64 and so is subtracting 0.5: one rounding, as a fused one.
    source = np.maximum((np.float64(scale) * (np.arange(out) + 0.5) - 0.5).astype(np.float32), np.float32(0))
    first = np.minimum(np.floor(source).astype(np.int64), size - 1)
    second_weight = np.clip(source - first.astype(np.float32), np.float32(0), np.float32(1))
    second = np.where(first < size - 1, first + 1, first)
    return first, second, np.float32(1) - second_weight, second_weight


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a x b + c rounded once to float32, for float32 arrays (a fused multiply-add). The product is exact
    in float64, and so is the sum with its rounding error kept apart (TwoSum); a float64 sum that lies
    exactly halfway between two float32 values goes to the side the exact sum lies on, which rounding
    twice would not."""
    product, c = a.astype(np.float64) * b, np.asarray(c, np.float64)
    total = product + c
    part = total - product
    error = (product - (total - part)) + (c - part)
    rounded = total.astype(np.float32)
    off = total - rounded  # exact: where the float64 sum lies from its float32 rounding
    beyond = np.nextafter(rounded, np.where(off > 0, np.float32(np.inf), np.float32(-np.inf)))
    halfway = (off != 0) & (2 * np.abs(off) == np.abs(beyond.astype(np.float64) - rounded))
    return np.where(halfway & (np.sign(error) == np.sign(off)), beyond, rounded)
