"""The gallery's files: mel images (PNG, no plotting library) and one self-contained page.

``index.html`` carries its data inline (a JSON script element), its style and its script, so
it opens from ``file://`` as well as from any static server; the audio and images are files
beside it, referenced by relative paths. Nothing is fetched from the network.
"""

from __future__ import annotations

import html
import itertools
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel.fileio import atomic_write, atomic_write_text

# matplotlib's "magma" at 9 evenly spaced points, interpolated linearly between them.
MAGMA = np.array(
    [(0, 0, 4), (29, 17, 71), (81, 18, 124), (131, 38, 129), (183, 55, 121), (231, 82, 99),
     (252, 137, 97), (254, 196, 136), (252, 253, 191)], dtype=np.float64,
)  # fmt: skip
STATIC = Path(__file__).resolve().parent / "static"  # the page's style and script, inlined
MEL_RANGE_DB = 80.0  # the image shows the loudest 80 dB
IMAGE_WIDTH = 320


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG file bytes of ``rgb`` (uint8[H x W x 3])."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def mel_image(mel: np.ndarray, width: int = IMAGE_WIDTH, top_db: float | None = None) -> bytes:
    """A PNG of a log-mel (float[N_MELS x T]): low bins at the bottom, ``width`` pixels wide
    (frames averaged in groups), colours over the ``MEL_RANGE_DB`` dB below ``top_db`` (default:
    the mel's own maximum)."""
    db = np.asarray(mel, dtype=np.float64) * C.DB_PER_NEPER
    t = db.shape[1]
    width = max(1, min(width, t))
    edges = np.linspace(0, t, width + 1).round().astype(int)
    cols = np.stack([db[:, a:b].mean(1) for a, b in itertools.pairwise(edges)], 1)
    top = cols.max() if top_db is None else top_db
    x = np.clip((cols - (top - MEL_RANGE_DB)) / MEL_RANGE_DB, 0.0, 1.0)[::-1]
    pos = x * (len(MAGMA) - 1)
    lo = np.minimum(pos.astype(int), len(MAGMA) - 2)
    frac = (pos - lo)[..., None]
    rgb = MAGMA[lo] * (1 - frac) + MAGMA[lo + 1] * frac
    return png_bytes(np.round(rgb).astype(np.uint8))


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` to ``path`` atomically, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), path.suffix)


def _figures_html(figures: dict[str, Any]) -> str:
    names = {"mae_db": ("log-mel error", "{:.2f} dB"), "r": ("per-bin r", "{:.3f}"),
             "onset_f1_ratio": ("onset F1 ratio", "{:.2f}"),
             "recognition": ("recognized", "{:.0%}")}  # fmt: skip
    rows = [
        f"<div>{label}: <b>{fmt.format(figures[k])}</b></div>"
        for k, (label, fmt) in names.items()
        if figures.get(k) is not None
    ]
    return "".join(rows)


def page_html(doc: dict[str, Any]) -> str:
    """The gallery page for ``doc`` (the contents of ``gallery.json``)."""
    shown = [c for c in doc["configs"] if not c["hidden"]]
    head = "".join(
        f'<th title="{html.escape(c["description"])}"><div class="label">'
        f"{html.escape(c['label'])}</div>{_figures_html(c.get('figures', {}))}</th>"
        for c in shown
    )
    data = json.dumps({k: doc[k] for k in ("tracks", "instruments", "clips")} | {
        "configs": [c["name"] for c in shown]})  # fmt: skip
    data = data.replace("</", "<\\/")  # never ends the script element early
    title = html.escape(doc["title"])
    css = (STATIC / "gallery.css").read_text(encoding="utf-8")
    script = (STATIC / "gallery.js").read_text(encoding="utf-8")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{css}</style></head>
<body>
<h1>{title}</h1>
<p class="note">{html.escape(doc["note"])}</p>
<div class="filters">
<label>Instrument <select id="instrument"><option value="">all</option></select></label>
<label>Track <select id="track"><option value="">all</option></select></label>
<span id="count"></span>
</div>
<table id="gallery"><thead><tr><th>track / instrument</th>{head}</tr></thead>
<tbody></tbody></table>
<script id="gallery-data" type="application/json">{data}</script>
<script>
{script}</script>
</body></html>
"""


def write_page(site: Path, doc: dict[str, Any], with_html: bool = True) -> list[Path]:
    """Write ``gallery.json`` (and ``index.html`` unless ``with_html`` is false) into ``site``;
    returns their paths."""
    paths = [site / "gallery.json", site / "index.html"][: 2 if with_html else 1]
    atomic_write_text(paths[0], json.dumps(doc, indent=1) + "\n")
    if with_html:
        atomic_write_text(paths[1], page_html(doc))
    return paths
