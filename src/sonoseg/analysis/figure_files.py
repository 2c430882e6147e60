"""Figures written as PNG files that say where they came from: the sonoseg that drew each and, where given,
the provenance of its numbers, in the PNG's text (read by the report's figure modules, sonoseg.analysis.figures
and sonoseg.analysis.generalization)."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure


def save_figure(fig: Figure, out: str | Path, palette: bool = False, source: str = "", **savefig) -> None:
    """The figure as a PNG; ``palette``: in 256 colours, for grids of images, whose speckle makes a full-colour
    PNG about twice as large (grey images, two outline colours and black text lose nothing to it). The PNG's
    text names the sonoseg that drew it (Software) and, where given, ``source``: the provenance of what it
    shows, as a table's caption ends (the data, the code, the trainings; results.source_line). A figure taken
    out of the report into a paper or a slide still says where it came from (PIL's ``Image.open(png).text``,
    exiftool). ``savefig``: matplotlib's options, over a tight bounding box at the report's DPI."""
    from sonoseg.data import provenance

    savefig = {"bbox_inches": "tight", **savefig}

    text = {"Software": f"sonoseg {provenance.sonoseg_version()} at commit {provenance.sonoseg_commit()}"}
    if source:
        text["Source"] = source
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if palette:
        from PIL import Image, PngImagePlugin

        rendered = io.BytesIO()
        fig.savefig(rendered, format="png", **savefig)
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        quantized = Image.open(rendered).convert("RGB").quantize(256, dither=Image.Dither.NONE)
        quantized.save(out, optimize=True, pnginfo=info)
    else:
        fig.savefig(out, metadata=text, **savefig)
    import matplotlib.pyplot as plt

    plt.close(fig)
