"""What the page's two timbre views show: the 2-D map, mel previews and the 100-instrument space.

* The 2-D map comes from :func:`mel2mel.timbre.map.compute_timbre_map`, computed once in a
  background thread when the server starts (it takes seconds) and kept in memory.
* Hover previews come from :func:`mel2mel.timbre.map.preview_mel`, cached by point, sent as
  8-bit images of the log-mel (``PREVIEW_RANGE`` mapped to 0..255).
* Learned timbres of the timbre library (:mod:`mel2mel.timbre.library`) with the model's
  embedding size appear on the map as extra markers.
* The 100-instrument space is a JSON file (``space100.json``) and an acoustic model with a
  10-D embedding; either may be missing, and then the page says so.
"""

from __future__ import annotations

import functools
import json
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel.data.instrument_sets import SOUNDFONTS
from mel2mel.errors import UserError
from mel2mel.instruments import Instrument
from mel2mel.models.export import model_fingerprint
from mel2mel.synthesizer import PRETRAINED_DIR, Synthesizer
from mel2mel.timbre import map as timbre_map
from mel2mel.timbre.library import TimbreLibrary
from mel2mel.timbre.organization import GM_FAMILIES, family_name
from mel2mel.timbre.samples import SoundFontSamples, sequence_midi
from mel2mel.web.errors import ApiError

PREVIEW_RANGE = (-11.5, 2.5)  # log-mel values shown from black to white
PREVIEW_CACHE = 512
SPACE_JSON = PRETRAINED_DIR / "space100.json"
SPACE_MODEL = PRETRAINED_DIR / "acoustic100"


def _rounded(a: Any, digits: int) -> list[Any]:
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


class MapService:
    """The 2-D timbre map of ``synth`` and previews of any point of it."""

    def __init__(
        self, synth: Synthesizer, resolution: int = 41, library_root: Path | None = None
    ) -> None:
        self.synth = synth
        self.library_root = library_root
        self.resolution = resolution
        self.reference = timbre_map.reference_passage()
        self._cache: OrderedDict[tuple[float, float], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def compute(self) -> dict[str, Any]:
        """The map as JSON: grid, centroid and energy per cell, instruments, learned timbres."""
        m = timbre_map.compute_timbre_map(
            self.synth, resolution=self.resolution, preview_resolution=2,
            reference=self.reference, progress=False,
        )  # fmt: skip
        return {
            "xs": _rounded(m.xs, 4),
            "ys": _rounded(m.ys, 4),
            "centroid_hz": _rounded(m.centroid_hz, 1),
            "energy_db": _rounded(m.energy_db, 2),
            "instruments": [
                {"name": i["name"], "program": i.get("program"), "x": i["x"], "y": i["y"]}
                for i in m.instruments
            ],
            "user_timbres": user_timbres(self.synth, self.library_root),
        }

    def preview(self, x: float, y: float) -> tuple[bytes, int]:
        """The predicted mel at ``(x, y)`` as ``uint8[80 x F]`` bytes (row 0: lowest band), F."""
        key = (round(x, 3), round(y, 3))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                data = self._cache[key]
                return data, len(data) // 80
        mel = np.asarray(timbre_map.preview_mel(self.synth, key, reference=self.reference))
        lo, hi = PREVIEW_RANGE
        data = np.clip((mel - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8).tobytes()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > PREVIEW_CACHE:
                self._cache.popitem(last=False)
        return data, mel.shape[1]


def user_timbres(synth: Synthesizer, root: Path | None = None) -> list[dict[str, Any]]:
    """Learned timbres fitted on ``synth``'s model, as ``{name, x, y}``: those of the library
    in ``root``, else of the synthesizer's own library.

    A broken library must not break the map: what was read before an error is kept.
    """
    out = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unreadable entries are skipped
            library = TimbreLibrary(root) if root is not None else synth.timbres.library
            if library is None:
                return []
            entries = library.list(model=model_fingerprint(synth.acoustic))
        for t in entries:
            v = np.asarray(t.vector, dtype=np.float64).reshape(-1)
            if len(v) == 2 and np.all(np.isfinite(v)):
                out.append({"name": str(t.name), "x": float(v[0]), "y": float(v[1])})
    except Exception:
        return out
    return out


SPACE_KEYS = ("name", "embedding", "position", "centroid_hz", "energy_db")


class Space:
    """The 100-instrument space: its JSON and (loaded on first use) its acoustic model.

    Parameters
    ----------
    json_path, model_path:
        ``space100.json`` and the acoustic export (folder or prefix) with its 10-D embedding.
    """

    def __init__(self, json_path: Path | None = None, model_path: Path | None = None) -> None:
        self.json_path = Path(json_path or SPACE_JSON)
        self.model_path = Path(model_path or SPACE_MODEL)
        self.reason: str | None = None
        self.instruments: list[dict[str, Any]] = []
        self._synth: Synthesizer | None = None
        self._lock = threading.Lock()
        try:
            self._load()
        except (OSError, ValueError, KeyError, TypeError) as err:
            self.reason = f"the 100-instrument space could not be read: {err}"
            self.instruments = []

    @property
    def available(self) -> bool:
        """Whether the space can be shown and played."""
        return self.reason is None

    def _load(self) -> None:
        if not self.json_path.is_file():
            self.reason = f"the 100-instrument space is not installed ({self.json_path.name})"
            return
        model_json = self.model_path.with_suffix(".json")
        if not (model_json.is_file() or (self.model_path / "acoustic.json").is_file()):
            self.reason = f"the 100-instrument model is not installed ({self.model_path.name}.*)"
            return
        doc = json.loads(self.json_path.read_text(encoding="utf-8"))
        if doc.get("format") != 1:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        for k, inst in enumerate(doc["instruments"]):
            missing = [key for key in SPACE_KEYS if key not in inst]
            if missing or len(inst["position"]) != 3:
                raise ValueError(f"instrument {k} lacks {missing or 'a 3-D position'}")
        self.instruments = doc["instruments"]

    def public(self) -> dict[str, Any]:
        """The JSON the page gets: per instrument its GM family too, and whether the server
        can play the SoundFont behind each dot (FluidSynth installed)."""
        keys = ("name", "soundfont", "program", "position", "centroid_hz", "energy_db",
                "color_centroid", "color_energy")  # fmt: skip
        return {
            "available": self.available,
            "reason": self.reason,
            "soundfont_samples": self.available and SoundFontSamples.available(),
            "families": list(GM_FAMILIES),
            "instruments": [self._public_instrument(k, keys) for k in range(len(self.instruments))],
        }

    def _public_instrument(self, index: int, keys: tuple[str, ...]) -> dict[str, Any]:
        inst = self.instruments[index]
        family = family_name(inst.get("program"))
        return {"index": index, **{key: inst.get(key) for key in keys}, "family": family}

    def soundfont_instrument(self, index: int) -> Instrument:
        """The instrument behind dot ``index``: name, program and its SoundFont's path.

        The JSON's ``soundfont`` (a file name) picks one of the Debian SoundFonts; otherwise the
        SoundFont comes from the name (:func:`mel2mel.timbre.samples.soundfont_for`).
        """
        inst = self.instruments[index]
        known = {sf.path.name: sf.path for sf in SOUNDFONTS.values()}
        path = known.get(str(inst.get("soundfont")))
        return Instrument(inst["name"], inst.get("program"), None if path is None else str(path))

    def synth(self) -> Synthesizer:
        """The space's synthesizer (loaded once, in whichever thread asks first)."""
        with self._lock:
            if self._synth is None:
                self._synth = Synthesizer.from_pretrained(self.model_path, vocoder="griffinlim")
            return self._synth

    def embedding(self, index: int) -> np.ndarray:
        """The embedding of instrument ``index``."""
        return np.asarray(self.instruments[index]["embedding"], dtype=np.float32)


def soundfont_wav(
    samples: SoundFontSamples, inst: Instrument, seq: Any, start: float, seconds: float
) -> bytes:
    """16-bit WAV of ``seq`` from ``start`` for ``seconds`` played by ``inst``'s SoundFont, at
    FluidSynth's own level (not normalized).

    Raises ApiError 503 naming the Debian package when the SoundFont is missing.
    """
    from mel2mel.web.bodies import wav_bytes

    try:
        audio = samples.render(inst, sequence_midi(seq, start, seconds))
    except UserError as err:
        if "SoundFont" not in str(err):
            raise ApiError(422, err.public_message()[:300]) from None
        package = next((sf.package for sf in SOUNDFONTS.values() if sf.package in str(err)), None)
        hint = f" (apt install {package})" if package else ""
        msg = f"the SoundFont of {inst.name} is not installed on the server{hint}"
        raise ApiError(503, msg) from None
    audio = audio[: round(seconds * C.SAMPLE_RATE)]
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    return wav_bytes([pcm.tobytes()])


@functools.cache
def plotly_js() -> Path | None:
    """plotly.js as shipped inside the ``plotly`` Python package, if installed."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None
