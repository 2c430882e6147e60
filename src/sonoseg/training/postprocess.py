"""Post-processing chosen on validation data, as nnU-Net chooses it by cross-validation: whether
keeping one connected component (the paper's rule: the largest, holes filled) helps a network, decided
per run and fold on that fold's validation part only, with every seed's model of the fold. In this
design the out-of-fold predictions are the test predictions, so the test part cannot choose anything.

The choice is written beside the fold's models (runs/<run>/fold<F>/postprocess.json) and read by every
prediction made with them: the study's (sonoseg predict), `sonoseg segment` on a run folder, the
external tests. A tie keeps the paper's rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sonoseg.analysis.evaluate import dice
from sonoseg.data.imageio import read_mask
from sonoseg.data.preprocess import load_cache
from sonoseg.errors import SonosegError
from sonoseg.serving import infer
from sonoseg.serving.modelio import images_to_tensor
from sonoseg.serving.options import POSTPROCESSES


def validation_dice(
    models: list[str | Path],
    val_cache: str | Path,
    samples: pd.DataFrame,
    rule: str,
    device: str = "auto",
    scales: tuple[float, ...] = (1.0,),
    shrink_above: float | None = None,
    shrink_found_above: float | None = None,
) -> pd.DataFrame:
    """One row per model x validation image: the Dice of every post-processing at the image's original
    size (its mask as the manifest gives it), the probabilities made as the test's are (``scales``:
    sonoseg.serving.infer.scale_adaptive, ``shrink_above`` its size-aware rule, ``shrink_found_above`` the
    rule's second trigger)."""
    arrays = load_cache(val_cache)
    ids = [str(s) for s in arrays["sample_ids"]]
    by_id = samples.set_index("sample_id")
    missing = [s for s in ids if s not in by_id.index]
    if missing:
        raise SonosegError(f"{val_cache}: validation samples {missing[:5]} are not in the manifest's validation part")
    truths = {s: read_mask(by_id.loc[s, "mask"]).pixels for s in ids}
    images = images_to_tensor(arrays["images"]).numpy()
    rows = []
    for model in models:
        predictor = infer.torch_predictor(model, device, option="train.device")
        infer.check_cache(arrays, val_cache, predictor, model)  # prepared as its training data, as predict checks
        run = infer.scale_selection(predictor, scales, shrink_above, shrink_found_above, str(model))(predictor.run)
        probabilities = np.concatenate([batch for _, batch in infer.in_batches(run, images)])
        for sample_id, probability in zip(ids, probabilities):
            truth = truths[sample_id]
            row = {"model": str(model), "sample_id": sample_id}
            for option in POSTPROCESSES:
                mask = infer.probability_to_mask(probability, *truth.shape, rule, option)
                row[option] = dice(mask, truth)
            rows.append(row)
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame) -> dict:
    """The option with the higher mean validation Dice (a tie keeps keep_one), with the means."""
    if table.empty:
        raise SonosegError("post-processing choice: no validation image")
    means = {option: float(table[option].mean()) for option in POSTPROCESSES}
    chosen = "none" if means["none"] > means["keep_one"] else "keep_one"
    return {
        "chosen": chosen,
        "criterion": "mean validation Dice over the fold's validation images and seeds (a tie keeps keep_one)",
        "validation_dice": means,
        "validation_images": int(table["sample_id"].nunique()),
        "models": sorted(set(table["model"])),
    }


def training_fingerprints(models: list[str | Path]) -> dict[str, str]:
    """Each model's training fingerprint, by its path as ``choose`` lists it: recorded with the choice, so that a
    model put in a member's place later (another study's training, copied in) is told from the one the choice
    was made with (sonoseg.serving.modelio.ensemble_members). A file that records none is left out."""
    from sonoseg.serving.modelio import MODEL_FORMAT, load_checked

    found = {str(model): load_checked(model, MODEL_FORMAT, metadata_only=True).get("fingerprint") for model in models}
    return {model: fingerprint for model, fingerprint in sorted(found.items()) if fingerprint}


def write_choice(choice: dict, out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(choice, indent=2, sort_keys=True) + "\n")
