"""Near-duplicate images: copies of one frame that are not pixel-identical (re-encoded, rescaled,
cropped, marked), found by proposal over all pairs and confirmed by their speckle
(docs/near_duplicates.md)."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- near duplicates
#
# Public sets hold copies of one frame that are not pixel-identical: re-encoded, rescaled, contrast
# changed, cropped by a few percent at the border (and resized back), with calipers or text drawn on
# them. Speckle is the fingerprint of a frame: no two frames share it, and every copy keeps it. The
# finder works in two steps (docs/near_duplicates.md gives the rule, the measurements and the tests):
#
# 1. Proposal, over all pairs at once (one matrix product). Each image is equalised (a rank transform:
#    gamma, contrast and brightness drop out), stretched to 256x256, and reduced to 12x12 thumbnails:
#    one of its centre (the middle 80 %), and 81 of the places where that centre lies in the image when
#    the other image is a crop of it: per axis, a window of 100, 92 or 84 % of the image, centred or
#    moved by 4 % either way (crops up to about 10 % per side). A pair's score is the best correlation
#    of either image's centre with the other's 81 thumbnails; it is a candidate when the angle between
#    the thumbnails, arccos(score), is at most near_duplicate_distance / 64 of a half turn, i.e. the
#    Hamming distance a 64-bit random-hyperplane hash of the thumbnails would show on average (12 bits:
#    correlation >= 0.83; 64: every pair; -1: no search). The thumbnails see layout, not speckle, so
#    images of one scanner and organ preset are candidates too: the proposal only saves time.
# 2. Confirmation of each candidate. The proposal's window is the first guess of where one image lies
#    in the other; the map (affine: scale and shift per axis) is refined by maximising the enhanced
#    correlation coefficient (cv2.findTransformECC) on 32, 64 and 128 px versions, and on 256 px when the
#    pair already looks alike (similarity >= REFINE_FROM). The region both show is resampled to 96x96 in
#    each image and compared by its speckle: the grayscale minus its Gaussian blur (sigma 1 px), cut into
#    8x8 blocks of 12x12, and the lower quartile, over the blocks textured in both, of the blocks'
#    normalised correlations. Three quarters of the blocks must agree, so an identical overlay or field
#    of view cannot carry a pair. Merged from near_duplicate_similarity (0.7). Measured on the phantom:
#    copies (crops of 3-10 % resized back, one-sided crops, rescaling 0.33-1.25x, gamma, contrast,
#    brightness, JPEG q 40-70, calipers, all at once) score >= 0.95; different frames score <= 0.08,
#    <= 0.34 with an identical overlay, <= 0.4 for the same anatomy scanned again with new speckle.
CANONICAL_SIDE = 256
THUMBNAIL_SIDE = 12
THUMBNAIL_MARGIN = 0.1  # the centre thumbnail leaves out 10 % at each border (what a crop may cut)
# (width, shift of the centre) of a window per axis, as fractions of the image: a copy cropped by
# (left, right) shows the window of width 1 - left - right whose centre is moved by (left - right) / 2.
CROP_WINDOWS = tuple((width, shift) for width in (1.0, 0.92, 0.84) for shift in (0.0, -0.04, 0.04))
HASH_BITS = 64  # the unit of near_duplicate_distance
ALIGNMENT_LEVELS = ((32, 30, 3), (64, 20, 3), (128, 15, 5))  # (side in px, ECC iterations, Gaussian filter)
FINE_LEVEL = (CANONICAL_SIDE, 30, 5)
REFINE_FROM = 0.3  # copies score >= 0.6 before the 256-px refinement, different frames <= 0.1
MAX_WARP_CHANGE = 0.15  # an ECC step moving the map further from the proposal's window is refused
MIN_SHARED = 0.5  # per axis: the two images must show at least half of each other's field
SIGNATURE_SIDE = 96
SIGNATURE_BLOCK = 12
SIGNATURE_SIGMA = 1.0
SIMILARITY_QUANTILE = 25  # percent: the lower quartile of the block correlations
TEXTURED_BLOCK_STD = 1.0  # gray levels: flatter blocks (background) are not compared
MIN_COMMON_BLOCKS = 4
DEFAULT_DUPLICATE_SIMILARITY = 0.7
DEFAULT_DUPLICATE_DISTANCE = 12  # hash bits (near_duplicate_distance's default)


@dataclass
class Fingerprint:
    """What the duplicate search keeps of an image (about 110 kB)."""

    canonical: np.ndarray  # uint8 CANONICAL_SIDE x CANONICAL_SIDE grayscale, the image stretched to a square
    thumbnails: np.ndarray  # float32 (windows, THUMBNAIL_SIDE**2), zero mean, unit norm; row 0: the centre
    height: int
    width: int


@dataclass(frozen=True)
class NearDuplicateMatch:
    """How a second image relates to a first one, as the confirmation found it."""

    similarity: float  # the speckle similarity over the region both show (1: same frame)
    bits: float  # the proposal's distance, in hash bits (see near_duplicate_distance)
    zoom: tuple[float, float]  # pixels of the second image per pixel of the first (x, y)
    field: tuple[float, float]  # share of the wider image's width and height that the other shows

    def flag_details(self) -> str:
        return (
            f"similarity={self.similarity:.3f},phash_bits={round(self.bits)},"
            f"zoom={self.zoom[0]:.2f}x{self.zoom[1]:.2f},field={self.field[0]:.2f}x{self.field[1]:.2f}"
        )


@functools.lru_cache(maxsize=1)
def _window_edges() -> np.ndarray:
    """(windows, THUMBNAIL_SIDE + 1): the thumbnail pixels' edges in each window's centre part (what
    the centre thumbnail of a copy cropped to that window sees), in canonical pixels."""
    edges = []
    for width, shift in CROP_WINDOWS:
        low = (0.5 + shift - width * (0.5 - THUMBNAIL_MARGIN)) * CANONICAL_SIDE
        high = (0.5 + shift + width * (0.5 - THUMBNAIL_MARGIN)) * CANONICAL_SIDE
        edges.append(np.linspace(low, high, THUMBNAIL_SIDE + 1))
    return np.array(edges)


def pixel_hash(pixels: np.ndarray) -> str:
    """The identity of an image's decoded pixels: equal for copies in any lossless format."""
    return hashlib.blake2b(pixels.tobytes(), digest_size=16).hexdigest()


def fingerprint(rgb: np.ndarray) -> Fingerprint:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    square = (CANONICAL_SIDE, CANONICAL_SIDE)
    canonical = cv2.resize(gray, square, interpolation=cv2.INTER_AREA)
    equalized = cv2.resize(cv2.equalizeHist(gray), square, interpolation=cv2.INTER_AREA)
    # Every thumbnail pixel is the mean over its box, fractional edges counted in part: the integral
    # image is bilinear inside each pixel, so interpolating it at the boxes' corners is exact.
    integral = cv2.integral(equalized, sdepth=cv2.CV_64F)
    edges = _window_edges()
    windows, bins = edges.shape[0], edges.shape[1] - 1
    at, whole = edges.ravel(), np.floor(edges.ravel()).astype(int)
    part, following = at - whole, np.minimum(whole + 1, CANONICAL_SIDE)
    rows = integral[whole] * (1 - part)[:, None] + integral[following] * part[:, None]
    corners = (rows[:, whole] * (1 - part) + rows[:, following] * part).reshape(windows, bins + 1, windows, bins + 1)
    sums = corners[:, 1:, :, 1:] - corners[:, :-1, :, 1:] - corners[:, 1:, :, :-1] + corners[:, :-1, :, :-1]
    # (vertical window, row, horizontal window, column) -> one thumbnail per (vertical, horizontal) window;
    # a window's boxes all have one area, which the normalisation removes.
    thumbnails = sums.transpose(0, 2, 1, 3).reshape(windows**2, bins**2)
    thumbnails -= thumbnails.mean(axis=1, keepdims=True)
    thumbnails /= np.maximum(np.linalg.norm(thumbnails, axis=1, keepdims=True), 1e-6)
    return Fingerprint(canonical, thumbnails.astype(np.float32), *gray.shape)


def bits_of(correlation: float) -> float:
    """The proposal distance in hash bits: 64 x angle / pi (a random-hyperplane hash's expected bits)."""
    return HASH_BITS * float(np.arccos(np.clip(correlation, -1.0, 1.0))) / np.pi


@dataclass(frozen=True)
class Proposal:
    """A candidate pair, with the proposal's guess of how one image lies in the other."""

    first: int  # positions in the fingerprint list, first < second
    second: int
    correlation: float
    crop: int  # first or second: the image whose centre was found in a window of the other
    window: int  # that window: vertical index x len(CROP_WINDOWS) + horizontal index


def propose(fingerprints: list[Fingerprint], max_bits: int) -> list[Proposal]:
    """Candidate pairs: thumbnail angle within max_bits (of 64) of a half turn. Quadratic, vectorised."""
    if max_bits < 0 or len(fingerprints) < 2:
        return []
    floor = np.cos(np.pi * min(max_bits, HASH_BITS) / HASH_BITS) - 1e-6
    centres = np.stack([f.thumbnails[0] for f in fingerprints])
    windows = np.stack([f.thumbnails for f in fingerprints])
    n, per_image, size = windows.shape
    flat = windows.reshape(n * per_image, size)
    best = np.empty((n, n), np.float32)  # best[a, b]: a's centre in b's windows (a is the crop)
    where = np.empty((n, n), np.int16)
    for start in range(0, n, 64):
        scores = (centres[start : start + 64] @ flat.T).reshape(-1, n, per_image)
        best[start : start + 64] = scores.max(axis=2)
        where[start : start + 64] = scores.argmax(axis=2)
    proposals = []
    for a, b in zip(*np.nonzero(np.triu(np.maximum(best, best.T) >= floor, 1))):
        crop, frame = (a, b) if best[a, b] >= best[b, a] else (b, a)
        proposals.append(Proposal(int(a), int(b), float(best[crop, frame]), int(crop), int(where[crop, frame])))
    return proposals


def _window_map(window: int) -> np.ndarray:
    """The proposal's guess: the crop's normalised coordinates (0..1) -> the frame's, 3x3."""
    (height, shift_y), (width, shift_x) = (
        CROP_WINDOWS[window // len(CROP_WINDOWS)],
        CROP_WINDOWS[window % len(CROP_WINDOWS)],
    )
    return np.array([[width, 0, 0.5 + shift_x - width / 2], [0, height, 0.5 + shift_y - height / 2], [0, 0, 1]])


def _to_pixels(side: int) -> np.ndarray:
    """Normalised coordinates -> pixel coordinates of a side x side image (pixel centres at +0.5)."""
    return np.array([[side, 0, -0.5], [0, side, -0.5], [0, 0, 1]])


def _ecc(frame: Fingerprint, crop: Fingerprint, mapping: np.ndarray, level: tuple[int, int, int]) -> np.ndarray:
    """Refine the crop -> frame map on side x side versions; the map unchanged when ECC fails or wanders."""
    side, iterations, filter_size = level

    def at_side(image):
        return (
            image if image.shape[0] == side else cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        ).astype(np.float32)

    pixels = _to_pixels(side)
    warp = (pixels @ mapping @ np.linalg.inv(pixels))[:2].astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-4)
    try:
        _, warp = cv2.findTransformECC(
            at_side(crop.canonical), at_side(frame.canonical), warp, cv2.MOTION_AFFINE, criteria, None, filter_size
        )
    except cv2.error:  # no convergence (flat images, unrelated pairs)
        return mapping
    refined = np.linalg.inv(pixels) @ np.vstack([warp, [0, 0, 1]]).astype(np.float64) @ pixels
    return refined if np.abs(refined - mapping).max() <= MAX_WARP_CHANGE else mapping


def _shared_region(frame: Fingerprint, crop: Fingerprint, mapping: np.ndarray):
    """The region both images show, resampled to SIGNATURE_SIDE x SIGNATURE_SIDE in each (float32), and
    its extent in the crop's normalised coordinates per axis; None when it is under MIN_SHARED."""
    corners = np.linalg.inv(mapping) @ np.array([[0, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1]], dtype=float)
    xs, ys = np.sort(corners[0]), np.sort(corners[1])
    x0, x1, y0, y1 = max(0.0, xs[1]), min(1.0, xs[2]), max(0.0, ys[1]), min(1.0, ys[2])
    if x1 - x0 < MIN_SHARED or y1 - y0 < MIN_SHARED:
        return None
    # Resampled at twice the signature's size, then area-reduced: both images alike, whatever their zoom.
    out = 2 * SIGNATURE_SIDE
    grid = np.array(
        [[(x1 - x0) / out, 0, x0 + 0.5 * (x1 - x0) / out], [0, (y1 - y0) / out, y0 + 0.5 * (y1 - y0) / out], [0, 0, 1]]
    )
    pixels = _to_pixels(CANONICAL_SIDE)
    views = []
    for image, to_image in ((frame, mapping), (crop, np.eye(3))):
        warp = (pixels @ to_image @ grid)[:2].astype(np.float32)
        big = cv2.warpAffine(
            image.canonical.astype(np.float32),
            warp,
            (out, out),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        views.append(cv2.resize(big, (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA))
    return views, (x1 - x0, y1 - y0)


def _match(frame: Fingerprint, crop: Fingerprint, window: int) -> tuple[float, np.ndarray, tuple[float, float]]:
    """Align the crop in the frame from the proposal's window; (similarity, map, shared extent)."""
    mapping = _window_map(window)
    for level in ALIGNMENT_LEVELS:
        mapping = _ecc(frame, crop, mapping, level)
    similarity, shared = _aligned_similarity(frame, crop, mapping)
    if similarity >= REFINE_FROM:
        finer = _ecc(frame, crop, mapping, FINE_LEVEL)
        better, extent = _aligned_similarity(frame, crop, finer)
        if better > similarity:
            similarity, mapping, shared = better, finer, extent
    return similarity, mapping, shared


def _aligned_similarity(
    frame: Fingerprint, crop: Fingerprint, mapping: np.ndarray
) -> tuple[float, tuple[float, float]]:
    region = _shared_region(frame, crop, mapping)
    if region is None:
        return 0.0, (0.0, 0.0)
    (in_frame, in_crop), shared = region
    return duplicate_similarity(_residual_blocks(in_frame), _residual_blocks(in_crop)), shared


def match_near_duplicate(
    first: Fingerprint, second: Fingerprint, proposal: Proposal | None = None
) -> NearDuplicateMatch:
    """Confirm one pair (the proposal from ``propose``, or found here): similarity, zoom and field."""
    if proposal is None:
        proposal = propose([first, second], HASH_BITS)[0]
    first_is_crop = proposal.crop == proposal.first
    crop, frame = (first, second) if first_is_crop else (second, first)
    similarity, mapping, shared = _match(frame, crop, proposal.window)
    scale = np.array([mapping[0, 0], mapping[1, 1]])  # share of the frame's width / height the crop shows
    # Pixels of the crop per pixel of the frame, per axis; then of the second per pixel of the first.
    zoom = np.array([crop.width, crop.height]) / (scale * np.array([frame.width, frame.height]))
    zoom = 1 / zoom if first_is_crop else zoom
    # The shared extent in the frame's units, over the wider of the two fields (the crop spans `scale`).
    field = scale * np.array(shared) / np.maximum(scale, 1.0)
    return NearDuplicateMatch(similarity, bits_of(proposal.correlation), tuple(zoom.tolist()), tuple(field.tolist()))


def confirm(
    fingerprints: list[Fingerprint], proposals: list[Proposal], threads: int = 1
) -> Iterator[NearDuplicateMatch]:
    """``match_near_duplicate`` of each proposal (indices into ``fingerprints``), in the proposals' order,
    as they come: a caller keeps only what it needs (images of one scanner and preset can make every pair
    a candidate, a million of them: docs/near_duplicates.md). Each pair is independent, and OpenCV and
    numpy release the GIL, so ``threads`` threads share the work."""

    def one(proposal: Proposal) -> NearDuplicateMatch:
        return match_near_duplicate(fingerprints[proposal.first], fingerprints[proposal.second], proposal)

    return in_threads(one, proposals, threads)


@dataclass(frozen=True)
class NearDuplicateSearch:
    """What ``near_duplicates`` found: the confirmed pairs, and the counts the log gives."""

    confirmed: list[tuple[Proposal, NearDuplicateMatch]]  # in the proposals' order
    candidates: int  # pairs proposed (and considered)
    unconfirmed: int  # of those, not identical and below the similarity


def near_duplicates(
    fingerprints: list[Fingerprint],
    hashes: list[str],
    max_bits: int,
    min_similarity: float,
    threads: int = 1,
    considered: Callable[[Proposal], bool] = lambda proposal: True,
) -> NearDuplicateSearch:
    """The near-duplicate rule over one list of images (ingest's within a dataset, the overlap check's
    across two): pairs proposed within ``max_bits`` that ``considered`` keeps; of those, pairs of
    identical pixels (equal ``hashes``) left to the caller, the rest confirmed on ``threads`` threads
    and kept from ``min_similarity``."""
    proposals = [proposal for proposal in propose(fingerprints, max_bits) if considered(proposal)]
    to_confirm = [p for p in proposals if hashes[p.first] != hashes[p.second]]
    confirmed, unconfirmed = [], 0
    for proposal, match in zip(to_confirm, confirm(fingerprints, to_confirm, threads)):
        if match.similarity < min_similarity:
            unconfirmed += 1
        else:
            confirmed.append((proposal, match))
    return NearDuplicateSearch(confirmed, len(proposals), unconfirmed)


def in_threads(function, items: Iterable, threads: int, queued: int = 64) -> Iterator:
    """``function(item)`` of each item, in order, as they come, on up to ``threads`` threads; at most
    ``queued`` items per thread wait at a time, so memory does not grow with the items."""
    if threads <= 1:
        yield from map(function, items)
        return
    pool = ThreadPoolExecutor(threads)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= queued * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # an error, or a caller that stops early: the waiting items are dropped, not run
        pool.shutdown(wait=True, cancel_futures=True)


def _residual_blocks(gray: np.ndarray) -> np.ndarray:
    """The fine texture of a SIGNATURE_SIDE-square grayscale: (blocks, block pixels) residuals."""
    side, block = SIGNATURE_SIDE, SIGNATURE_BLOCK
    residual = gray - cv2.GaussianBlur(gray, (0, 0), SIGNATURE_SIGMA)
    blocks = residual.reshape(side // block, block, side // block, block).transpose(0, 2, 1, 3)
    return blocks.reshape(-1, block * block)


def texture_signature(rgb: np.ndarray) -> np.ndarray:
    """The fine texture of a whole image on a fixed grid: (blocks, block pixels) float16 residuals."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(gray, (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA)
    return _residual_blocks(small).astype(np.float16)


def duplicate_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Lower quartile of the normalised correlations of two texture signatures' blocks, over the
    blocks textured in both (1: the same pixels up to brightness and contrast; near 0: unrelated)."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    limit = TEXTURED_BLOCK_STD * np.sqrt(a.shape[1])
    common = (norm_a > limit) & (norm_b > limit)
    if common.sum() < MIN_COMMON_BLOCKS:
        # Almost no texture (a blank or flat image): compare the whole residual instead.
        flat_a, flat_b = a.ravel(), b.ravel()
        denominator = np.linalg.norm(flat_a) * np.linalg.norm(flat_b)
        return float(flat_a @ flat_b / denominator) if denominator > 0 else 0.0
    correlations = (a[common] * b[common]).sum(axis=1) / (norm_a[common] * norm_b[common])
    return float(np.percentile(correlations, SIMILARITY_QUANTILE))
