import cv2
import numpy as np
import pytest

from sonoseg.data import marks, synth
from sonoseg.errors import SonosegError

YELLOW, GREEN, CYAN, RED, BLUE = (255, 255, 0), (0, 255, 0), (0, 255, 255), (255, 0, 0), (0, 0, 255)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buffer = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[:, :, ::-1])


def speckle(height: int = 450, width: int = 560, seed: int = 0) -> np.ndarray:
    """A grey speckle image (BUSI-like size) as RGB uint8, black band on top."""
    rng = np.random.default_rng(seed)
    gray = np.clip(120 * rng.exponential(1.0, (height, width)) ** 0.5, 0, 255).astype(np.uint8)
    gray = cv2.GaussianBlur(gray, (0, 0), 1.0)
    gray[:20] = 0
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def smooth_grey(height: int = 300, width: int = 400) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gray = (90 + 60 * np.sin(xx / 37.0) * np.cos(yy / 29.0) + yy / 10).clip(0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def draw_busi_like(clean: np.ndarray, seed: int = 0) -> np.ndarray:
    """Yellow and green '+' calipers with a dotted line between them, cyan anti-aliased text, and a
    Doppler box (green outline, red and blue flow blobs)."""
    rng = np.random.default_rng(seed)
    image = clean.copy()
    cv2.drawMarker(image, (120, 150), YELLOW, cv2.MARKER_CROSS, 13, 1)
    cv2.drawMarker(image, (260, 160), GREEN, cv2.MARKER_CROSS, 13, 2)
    for x in range(134, 248, 8):
        cv2.circle(image, (x, 155), 1, YELLOW, -1)
    cv2.putText(image, "D1 1.52cm", (10, 285), cv2.FONT_HERSHEY_SIMPLEX, 0.6, CYAN, 1, cv2.LINE_AA)
    cv2.rectangle(image, (300, 30), (380, 100), (0, 200, 0), 1)
    for _ in range(12):
        centre = (int(rng.integers(305, 375)), int(rng.integers(35, 95)))
        cv2.circle(image, centre, int(rng.integers(2, 6)), RED if rng.random() < 0.5 else BLUE, -1)
    return image


@pytest.mark.parametrize("quality", [None, 75, 90])
def test_a_grey_image_has_no_marks_and_comes_back_unchanged(quality):
    image = speckle()
    if quality:
        image = jpeg(image, quality)  # JPEG stores grey as zero chroma: still grey after decoding
    assert not marks.find_marks(image).any()
    out, count = marks.inpaint_marks(image)
    assert count == 0 and out.dtype == np.uint8 and out.tobytes() == image.tobytes()
    assert out is not image  # a copy: the caller may write into it


def test_white_text_is_not_a_mark():
    image = speckle()
    cv2.putText(image, "LOGIQ 4.0cm", (20, 430), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.drawMarker(image, (200, 200), (230, 230, 230), cv2.MARKER_CROSS, 13, 1)  # a grey caliper
    assert not marks.find_marks(image).any() and marks.caliper_centres(image) == []


def test_made_marks_are_found_and_inpainted_close_to_the_clean_image():
    clean = smooth_grey()
    image = draw_busi_like(clean)
    drawn = np.any(image != clean, axis=2)
    found = marks.find_marks(image)
    assert not (drawn & ~found).any()  # every drawn pixel (anti-aliased edges too) is found
    out, count = marks.inpaint_marks(image)
    changed = np.any(out != image, axis=2)
    assert count == changed.sum() and 0 < count <= found.sum()
    assert np.array_equal(out[~found], image[~found])  # outside the found area: bit for bit
    error = np.abs(out.astype(int) - clean.astype(int)).max(axis=2)
    assert error[drawn].mean() < 3  # grey levels, on a smooth background (measured 1.4)
    assert marks.chroma(out).max() == 0  # grey again ...
    assert not marks.find_marks(out).any()  # ... and nothing left to find


def test_made_marks_on_speckle_are_inpainted_like_their_surroundings():
    clean = speckle()
    image = draw_busi_like(clean, seed=3)
    drawn = np.any(image != clean, axis=2)
    out, count = marks.inpaint_marks(image)
    found = marks.find_marks(image)
    assert np.array_equal(out[~found], image[~found]) and count == np.any(out != image, axis=2).sum()
    error = np.abs(out.astype(int) - clean.astype(int))[..., 0]
    # Speckle cannot be restored: the fill is smooth, so the error is of the order of the speckle's
    # own spread around its local mean (measured 12.5 here), not near zero.
    assert error[drawn].mean() < 20
    assert marks.chroma(out).max() == 0


@pytest.mark.parametrize("quality", [75, 90])
def test_jpeg_compressed_marks_leave_no_strong_colour(quality):
    clean = smooth_grey()
    image = jpeg(draw_busi_like(clean), quality)
    out, count = marks.inpaint_marks(image)
    found = marks.find_marks(image)
    assert np.array_equal(out[~found], image[~found]) and count == np.any(out != image, axis=2).sum()
    residual = marks.chroma(out)
    # JPEG's chroma ringing (8 x 8 blocks of half-resolution colour) is taken with the marks: a few
    # faintly tinted pixels may stay (measured: 11 pixels, chroma <= 11 at quality 75), no mark.
    assert residual.max() < 2 * marks.LOW_CHROMA_THRESHOLD
    assert (residual > marks.LOW_CHROMA_THRESHOLD).sum() < 30


def test_the_phantoms_calipers_are_found_and_removed():
    """The phantom draws its calipers last: with calipers off, the same seed gives the same image
    without them, the ideal reference for the inpainting."""
    errors = []
    for patient in range(4):
        on, _, info = synth.render_sample(5, patient, 1)
        off, _ = synth.render(5, patient, 1, options=synth.PhantomOptions(calipers=False))
        drawn = np.any(on != off, axis=2)
        assert info["calipers"] and drawn.any()
        assert not marks.find_marks(off).any()
        found = marks.find_marks(on)
        assert not (drawn & ~found).any()
        out, count = marks.inpaint_marks(on)
        assert np.array_equal(out[~found], on[~found]) and np.array_equal(out[~found], off[~found])
        assert count == np.any(out != on, axis=2).sum()
        assert not marks.find_marks(out).any()
        errors.append(np.abs(out.astype(int) - off.astype(int))[..., 0][drawn].mean())
        # One '+' per drawn caliper, at its centre (the phantom's markers are 9 px '+').
        count_drawn, _, stats, centroids = cv2.connectedComponentsWithStats(drawn.astype(np.uint8), connectivity=8)
        centres = marks.caliper_centres(on)
        assert len(centres) == count_drawn - 1
        for x, y in centres:
            assert np.min(np.hypot(centroids[1:, 0] - x, centroids[1:, 1] - y)) < 1.0
    assert np.mean(errors) < 30  # measured ~24 on these four (speckle; see above)


@pytest.mark.parametrize("size, thickness", [(9, 1), (9, 2), (13, 1), (13, 2), (19, 1), (19, 2)])
@pytest.mark.parametrize("colour", [YELLOW, GREEN, CYAN, synth.CALIPER_RGB])
def test_plus_calipers_are_read_and_text_dots_and_doppler_boxes_are_not(size, thickness, colour):
    image = speckle(seed=size)
    points = [(200, 220), (360, 230), (280, 150), (285, 300)]
    for point in points:
        cv2.drawMarker(image, point, colour, cv2.MARKER_CROSS, size, thickness)
    for x in range(200 + size // 2 + 7, 360 - size // 2 - 6, 8):  # a dotted line between two of them
        cv2.circle(image, (x, 221), 1, colour, -1)
    # Text in the same colour, with a '+' (a legend), 'x', 'T', 'L' and 't': none is a caliper.
    cv2.putText(image, "+ D1 1.52cm", (20, 420), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 1, cv2.LINE_AA)
    cv2.putText(image, "+x T L t", (20, 380), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    cv2.rectangle(image, (380, 60), (500, 160), (0, 200, 0), 1)  # a Doppler box with flow
    rng = np.random.default_rng(0)
    for _ in range(30):
        centre = (int(rng.integers(385, 495)), int(rng.integers(65, 155)))
        cv2.circle(image, centre, int(rng.integers(2, 8)), RED if rng.random() < 0.5 else BLUE, -1)
    centres = marks.caliper_centres(image)
    assert len(centres) == 4
    for x, y in centres:
        assert min(np.hypot(x - px, y - py) for px, py in points) < 1.0


def test_anti_aliased_plus_calipers_are_read():
    image = speckle()
    points = [(150, 200), (330, 210), (240, 330)]
    for point, thickness in zip(points, (1, 2, 1)):
        cv2.drawMarker(image, point, YELLOW, cv2.MARKER_CROSS, 15, thickness, cv2.LINE_AA)
    cv2.drawMarker(image, (240, 100), YELLOW, cv2.MARKER_CROSS, 9, 2, cv2.LINE_AA)  # a blob: not read (documented)
    centres = marks.caliper_centres(image)
    assert len(centres) == 3 and all(min(np.hypot(x - px, y - py) for px, py in points) < 1.0 for x, y in centres)


def test_an_x_shaped_mark_is_not_a_plus_caliper():
    image = speckle()
    cv2.drawMarker(image, (200, 200), YELLOW, cv2.MARKER_TILTED_CROSS, 15, 1)
    assert marks.find_marks(image).any() and marks.caliper_centres(image) == []


def test_rules_and_errors():
    assert marks.mark_radius(380, 646) == 2 and marks.mark_radius(96, 128) == 1 and marks.mark_radius(1000, 1280) == 4
    image = speckle(100, 120)
    image[50, 60] = (200, 150, 150)  # chroma 50 > 40: one core pixel, dilated by the radius (1 here)
    assert marks.find_marks(image).sum() == 5
    image[50, 60] = (170, 150, 150)  # chroma 20: faint colour far from any mark is not a mark
    assert not marks.find_marks(image).any()
    with pytest.raises(SonosegError, match="RGB uint8"):
        marks.find_marks(np.zeros((10, 10), np.uint8))
    with pytest.raises(SonosegError, match="RGB uint8"):
        marks.inpaint_marks(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(SonosegError, match="low_threshold"):
        marks.find_marks(image, threshold=10, low_threshold=20)
