"""The external sets simulated with pymust (sonoseg.data.simulated, data/external/): the lesion and the
medium behave as drawn, a tiny simulation is reproducible and shows its lesion, and the committed sets
are what their simulation.json says, readable by the study's ingest."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from sonoseg import data
from sonoseg.data import simulated
from sonoseg.errors import SonosegError

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = REPO / "data" / "external"

# A tiny set: a shallow 48 x 64 image and a sparse medium, a few seconds per image on one core.
TINY = replace(
    simulated.SETS["pymust_dev"],
    name="tiny",
    depth_start_mm=3.0,
    depth_end_mm=15.0,
    rows=48,
    cols=64,
    scatterers_per_mm2=3.0,
    fat_depth_mm=(4.0, 6.0),
    lesion_type_weights=(1.0, 0.0, 0.0, 0.0, 0.0),  # hypoechoic only: its darkness is checked below
    hypoechoic_contrast_db=(16.0, 20.0),
    lesion_area_fraction=(0.1, 0.15),
    seed=5,
    patients=2,
)


APERTURE_MM = {
    "L11-5v": 128 * 0.3,
    "L12-3v": 192 * 0.2,
    "L9-4/38": 128 * 0.3048,
}  # elements x pitch, as pymust.getparam gives them


def geometry(settings):
    aperture = APERTURE_MM[settings.probe]
    return simulated.Geometry(aperture, settings.depth_start_mm, settings.depth_end_mm, settings.rows, settings.cols)


# ----------------------------------------------------------------------------- the medium (no pymust)


@pytest.mark.parametrize("name", sorted(simulated.SETS))
def test_lesions_lie_inside_the_image_and_cover_the_drawn_fraction(name):
    settings = simulated.SETS[name]
    grid = geometry(settings)
    x, z = grid.pixel_grid()
    types = set()
    for rng in simulated.image_generators(settings.seed, 40):
        medium = simulated._tissue(rng, settings, grid)
        lesion = simulated._draw_lesion(rng, settings, grid, float(medium.fascia_depth.max()))
        types.add(lesion.lesion_type)
        mask = lesion.inside(x, z)
        low, high = settings.lesion_area_fraction
        assert 0.8 * low <= mask.mean() <= 1.2 * high, (lesion, mask.mean())
        # Fully inside: the outline never reaches the image's border pixels.
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        # The bound used to place it holds: no lesion pixel beyond its half extents.
        half_x, half_z = lesion.half_extent()
        assert np.abs(x[mask] - lesion.center_x).max() <= half_x and np.abs(z[mask] - lesion.center_z).max() <= half_z
    assert types == {t for t, w in zip(simulated.LESION_TYPES, settings.lesion_type_weights) if w > 0}


def test_lesion_echo_levels_follow_the_type():
    outline = np.array([[3.0, 0.05, 0.0]])
    lesion = simulated.Lesion("isoechoic_halo", 0.0, 10.0, 4.0, 3.0, 0.0, outline, 1.0, -14.0, 0.3)
    assert lesion.level(np.array([0.0]), np.array([10.0]))[0] == 1.0  # the centre: the interior's level
    assert lesion.level(np.array([3.8]), np.array([10.0]))[0] == -14.0  # near the edge: the halo's
    assert lesion.inside(np.array([0.0, 3.9, 4.5]), np.array([10.0, 10.0, 10.0])).tolist() == [True, True, False]


@pytest.mark.parametrize("name", sorted(simulated.SETS))
def test_every_lesion_type_of_a_set_gets_its_share_of_the_images(name):
    settings = simulated.SETS[name]
    types = simulated.lesion_types(settings, settings.patients, settings.seed)
    assert types == simulated.lesion_types(settings, settings.patients, settings.seed)
    weights = np.asarray(settings.lesion_type_weights) / sum(settings.lesion_type_weights)
    counts = np.array([types.count(t) for t in simulated.LESION_TYPES])
    assert counts.sum() == settings.patients and np.all(np.abs(counts - weights * settings.patients) < 1)
    assert np.all(counts[weights > 0] > 0)


def test_each_image_has_its_own_generator_whatever_the_count():
    first = [rng.integers(1 << 30) for rng in simulated.image_generators(11, 3)]
    again = [rng.integers(1 << 30) for rng in simulated.image_generators(11, 5)]
    assert first == again[:3] and len(set(again)) == 5


def test_unknown_set_and_bad_settings_are_refused():
    with pytest.raises(SonosegError, match="unknown simulated set"):
        simulated.settings_of("pymust_nope")
    with pytest.raises(SonosegError, match="lesion_type_weights"):
        replace(TINY, lesion_type_weights=(1.0, 0.0))
    with pytest.raises(SonosegError, match="fat_depth_mm"):
        replace(TINY, fat_depth_mm=(4.0, 5.0))


# ----------------------------------------------------------------------------- a tiny simulation (pymust)


def test_a_tiny_simulation_is_reproducible_and_shows_its_lesion(tmp_path):
    pytest.importorskip("pymust")
    folder = simulated.write_set(tmp_path / "tiny", TINY)
    table = pd.read_csv(folder / "patients.csv")
    assert table["image"].tolist() == ["PMD001.png", "PMD002.png"]
    assert table["patient"].nunique() == 2
    record = json.loads((folder / "simulation.json").read_text())
    assert record["images"] == 2 and record["settings"]["rows"] == 48 and record["versions"]["pymust"]
    # The same seed (and the lesion type write_set gave the image) gives the same bytes as the file written.
    lesion_type = simulated.lesion_types(TINY, 2, TINY.seed)[0]
    image, mask, meta = simulated.simulate_image(TINY, simulated.image_generators(TINY.seed, 2)[0], lesion_type)
    written = cv2.imread(str(folder / "images" / "PMD001.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(image, written)
    assert np.array_equal(mask, cv2.imread(str(folder / "masks" / "PMD001.png"), cv2.IMREAD_UNCHANGED))
    assert meta["lesion_type"] == "hypoechoic" and meta == {k: table.iloc[0][k] for k in meta}
    assert image.shape == mask.shape == (TINY.rows, TINY.cols) and image.dtype == mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    assert 0.08 <= (mask > 0).mean() <= 0.18 and meta["lesion_area_px"] == int((mask > 0).sum())
    # A hypoechoic lesion 16-20 dB below the tissue is darker than its surroundings in the image.
    inside, outside = image[mask > 0].mean(), image[mask == 0].mean()
    assert inside < outside - 20 and meta["image_contrast_db"] < -5, (inside, outside, meta)
    # The second image differs (another child generator), and so would another seed.
    other = cv2.imread(str(folder / "images" / "PMD002.png"), cv2.IMREAD_UNCHANGED)
    assert not np.array_equal(other, image)
    # An existing set is replaced only on purpose.
    with pytest.raises(SonosegError, match="not empty"):
        simulated.write_set(folder, TINY)


# ----------------------------------------------------------------------------- the committed sets


@pytest.mark.parametrize("name", sorted(simulated.SETS))
def test_the_committed_sets_are_what_their_record_says(name):
    folder = EXTERNAL / name
    record = json.loads((folder / "simulation.json").read_text())
    settings = simulated.SETS[name]
    # The committed images were made with the settings the code holds now.
    assert record["settings"] == json.loads(json.dumps(asdict(settings)))
    assert record["seed"] == settings.seed and record["patients"] == settings.patients == record["images"]
    assert len(record["seconds_per_image"]) == record["images"]
    images = sorted(p.name for p in (folder / "images").glob("*.png"))
    masks = sorted(p.name for p in (folder / "masks").glob("*.png"))
    table = pd.read_csv(folder / "patients.csv")
    assert len(images) == record["images"] and images == masks == sorted(table["image"])
    assert set(simulated.METADATA_COLUMNS) <= set(table.columns)
    for image_name in images:
        image = cv2.imread(str(folder / "images" / image_name), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(folder / "masks" / image_name), cv2.IMREAD_UNCHANGED)
        assert image.shape == mask.shape == (settings.rows, settings.cols) and image.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255}
        assert 0.03 <= (mask > 0).mean() <= 0.25, image_name


@pytest.mark.parametrize("name", sorted(simulated.SETS))
def test_the_committed_sets_are_read_by_the_studys_ingest(name):
    folder = EXTERNAL / name
    record = json.loads((folder / "simulation.json").read_text())
    manifest = data.ingest(folder, "folder")  # on_bad_sample: fail, so any problem raises
    samples = data.included(manifest)
    assert len(samples) == record["images"]
    assert samples["mask"].map(lambda m: Path(m).name).tolist() == samples["image"].map(lambda m: Path(m).name).tolist()
    # One patient per image, none merged with another as a near duplicate.
    assert samples["patient"].nunique() == samples["group"].nunique() == record["images"]
    assert set(samples["meta_lesion_type"]) <= set(simulated.LESION_TYPES)
    # simulation.json is the only other file, and it is not an image.
    others = manifest[manifest["status"] != "included"]
    assert set(others["status"]) <= {"metadata", "ignored"}


HELD_OUT_DRAWS = {"pymust_heldout", "pymust_fresh"}  # the held-out settings, each set its own draw of them


@pytest.mark.parametrize("other", sorted(set(simulated.SETS) - HELD_OUT_DRAWS))
def test_the_held_out_set_is_made_otherwise_than_each_development_set(other):
    dev, heldout = simulated.SETS[other], simulated.SETS["pymust_heldout"]
    differing = {k for k, v in asdict(dev).items() if asdict(heldout)[k] != v}
    # Probe, frequency, depth, speckle density, compounding, display and lesion mix all differ.
    assert {
        "probe",
        "centre_frequency_mhz",
        "depth_end_mm",
        "scatterers_per_mm2",
        "plane_wave_angles_deg",
        "dynamic_range_db",
        "lesion_type_weights",
        "hypoechoic_contrast_db",
        "seed",
    } <= differing


def test_the_fresh_set_is_a_new_draw_of_the_held_out_settings():
    """pymust_fresh tests what pymust_heldout tests, on scans no look has shaped a choice by: the same probe,
    medium, display and lesion mix; its own seed, more images, and names that cannot clash with the older set's."""
    fresh, heldout = asdict(simulated.SETS["pymust_fresh"]), asdict(simulated.SETS["pymust_heldout"])
    assert {k for k, v in fresh.items() if heldout[k] != v} == {"name", "seed", "patients", "id_prefix"}
    assert fresh["patients"] > heldout["patients"]
    assert fresh["seed"] not in {s.seed for n, s in simulated.SETS.items() if n != "pymust_fresh"}
    assert not fresh["id_prefix"].startswith(heldout["id_prefix"]) and not heldout["id_prefix"].startswith(
        fresh["id_prefix"]
    )
