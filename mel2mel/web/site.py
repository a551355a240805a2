"""``mel2mel export site DIR``: the web page as static files that any static host can serve.

The folder holds the page (``index.html``, its scripts and style under ``static/``,
onnxruntime-web under ``static/vendor/ort/``, plotly.js's 3-D bundle as
``vendor/plotly.min.js``), the models as
ONNX (``models/``, :func:`mel2mel.models.onnx_export.export_onnx`) and what the server's API
would answer (``data/info.json``, ``data/map.json``, ``data/space.json``). The page sees
``window.M2M_SITE`` and runs everything in the browser: MIDI reading, previews, renders, the
100-instrument space. No server code; ``python -m http.server`` works (one thread without
cross-origin isolation, see docs/WEB.md for the headers that give two).

The space's "SoundFont sample" needs FluidSynth, which a static host does not run: when it is
installed at export time, each dot's SoundFont playing the reference passage is rendered then
(:func:`mel2mel.timbre.space3d.write_soundfont_samples`, Ogg/Opus, about 15 kB each) into
``data/soundfont/``, and ``space.json`` says so (``"soundfont_reference_only": true``, per
instrument ``sample_soundfont``, relative to ``data/``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write_text
from mel2mel.models.onnx_export import export_onnx
from mel2mel.synthesizer import Synthesizer
from mel2mel.timbre import map as timbre_map
from mel2mel.timbre.samples import SoundFontSamples
from mel2mel.timbre.space3d import write_soundfont_samples
from mel2mel.web.config import WebConfig
from mel2mel.web.inpage import PLOTLY_3D
from mel2mel.web.maps import Space, plotly_js

STATIC = Path(__file__).resolve().parent / "static"
SITE_CONFIG = '<script>window.M2M_SITE = {"models": "models/", "data": "data/"};</script>\n'
LEFT_OUT = ("listen.html", "listen.js", "listen.css")  # the listening test needs its server
SOUNDFONT_CLIPS = "soundfont"  # data/soundfont/NNN-slug.soundfont.ogg


def site_index() -> str:
    """The page's ``index.html`` with relative URLs and the static-site switch."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    html = html.replace('"/static/', '"static/').replace('"/vendor/', '"vendor/')
    first = html.index("<script")
    return html[:first] + SITE_CONFIG + html[first:]


def map_json(synth: Synthesizer, resolution: int) -> dict[str, Any]:
    """``/api/map``'s answer for ``synth``, without the operator's learned timbres."""
    m = timbre_map.compute_timbre_map(synth, resolution=resolution, preview_resolution=2,
                                      progress=False)  # fmt: skip
    r = lambda a, d: json.loads(json.dumps(a.round(d).tolist()))  # noqa: E731
    return {
        "xs": r(m.xs, 4), "ys": r(m.ys, 4), "centroid_hz": r(m.centroid_hz, 1),
        "energy_db": r(m.energy_db, 2),
        "instruments": [{"name": i["name"], "program": i.get("program"), "x": i["x"], "y": i["y"]}
                        for i in m.instruments],
        "user_timbres": [],
    }  # fmt: skip


def space_json(space: Space, data: Path, *, soundfont_samples: bool = True,
               progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """``/api/space``'s answer for the static site, with the dots' SoundFont clips of the
    reference passage written under ``data`` when ``soundfont_samples`` and FluidSynth is
    installed (none otherwise, and ``"soundfont_samples": false``)."""
    doc = {**space.public(), "soundfont_samples": False, "soundfont_reference_only": True}
    clips = data / SOUNDFONT_CLIPS
    if clips.exists():
        shutil.rmtree(clips)
    if soundfont_samples and space.available and SoundFontSamples.available():
        seconds = WebConfig().space_clip_seconds  # as long as the model's clip of a dot
        written = write_soundfont_samples(doc["instruments"], clips, seconds=seconds,
                                          progress=progress)  # fmt: skip
        doc["soundfont_samples"] = written > 0
    return doc


def export_site(out_dir: str | os.PathLike, *, model: str | os.PathLike | None = None,
                map_resolution: int = 41, half: bool = True, soundfont_samples: bool = True,
                progress: bool = False, force: bool = False) -> dict[str, int]:  # fmt: skip
    """Write the static site to ``out_dir``; returns the size in bytes of each file written.

    ``model``: the acoustic export (default: the shipped one; ``"paper"`` names the shipped
    model of the paper's loss), with its texture post-net if it has one.
    ``soundfont_samples``: render each dot's SoundFont clip of the reference passage with
    FluidSynth (skipped, without error, when FluidSynth is not installed; see
    :func:`space_json`). ``progress``: a progress bar for those renders.

    Raises
    ------
    UserError
        If ``out_dir`` already holds a site (``index.html``) and not ``force``.
    """
    out = Path(out_dir)
    if (out / "index.html").exists() and not force:
        raise UserError(f"{out / 'index.html'} exists (use -f/--force to overwrite)")
    if map_resolution < 2:
        raise UserError("the map resolution must be at least 2")
    out.mkdir(parents=True, exist_ok=True)
    manifest = export_onnx(out / "models", model=model, half=half, force=True)
    static = out / "static"
    if static.exists():
        shutil.rmtree(static)
    left_out = shutil.ignore_patterns(*LEFT_OUT, "index.html", "plotly")
    shutil.copytree(STATIC, static, ignore=left_out)
    # plotly.js's 3-D bundle (1.75 MB, static/vendor/plotly/README.md), else the pip wheel's
    plotly = PLOTLY_3D if PLOTLY_3D.is_file() else plotly_js()
    if plotly is not None:
        (out / "vendor").mkdir(exist_ok=True)
        shutil.copyfile(plotly, out / "vendor" / "plotly.min.js")
    synth = Synthesizer.from_pretrained(model, vocoder="griffinlim")
    space = Space()
    data = out / "data"
    data.mkdir(exist_ok=True)
    info = {
        "instruments": [{"name": i.name, "program": i.program, "embedding": i.embedding}
                        for i in synth.instruments()],
        "embedding_dim": synth.timbres.dim, "vocoders": ["fast"], "default_vocoder": "fast",
        "sample_rate": C.SAMPLE_RATE, "limits": WebConfig().page_limits(), "space": {
            "available": space.available and manifest["space100"] is not None,
            "reason": space.reason},
        "inpage": {"available": True, "ready": True, "reason": None},
    }  # fmt: skip
    compact = {"separators": (",", ":")}  # the site's bytes count (docs/WEB.md: 25 MB)
    atomic_write_text(data / "info.json", json.dumps(info, **compact))
    atomic_write_text(data / "map.json", json.dumps(map_json(synth, map_resolution), **compact))
    doc = space_json(space, data, soundfont_samples=soundfont_samples, progress=progress)
    atomic_write_text(data / "space.json", json.dumps(doc, **compact))
    atomic_write_text(out / "index.html", site_index())
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {str(p.relative_to(out)): p.stat().st_size for p in files}
