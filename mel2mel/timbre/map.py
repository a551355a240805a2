"""Timbre maps: what the acoustic model plays across its 2-D embedding plane.

The paper reports that the learned 2-D timbre space "lines up with spectral centroid and mean
energy". A :class:`TimbreMap` measures that: the model plays one fixed
:func:`reference_passage` at every point of a grid over the instruments' bounding box (plus a
margin), and each predicted mel is reduced to two numbers (:func:`mel_statistics`):

* ``centroid_hz``: the spectral centroid, ``sum_b f_b M_b / sum_b M_b`` with ``f_b`` the
  centre frequency of mel band ``b`` and ``M_b`` the *linear* mel magnitude summed over the
  active frames (frames where a note of the passage sounds);
* ``energy_db``: ``10 log10`` of the mean over active frames of ``sum_b M_b**2``.

:meth:`TimbreMap.spearman` then finds the direction of the plane along which each field is
ordered best (the angle maximizing ``|Spearman rho|``, searched every 0.25 degrees).

The model runs on all grid points in batches through
:class:`~mel2mel.timbre.sweep.EmbeddingSweep`, which computes the exact forward of many
embeddings at once (the passage's input projection is shared between them).
"""

from __future__ import annotations

import base64
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel.audio import mel_band_frequencies
from mel2mel.errors import UserError, require
from mel2mel.fileio import atomic_write
from mel2mel.midi import Note, NoteSequence, piano_roll
from mel2mel.models.export import model_fingerprint
from mel2mel.timbre.sweep import EmbeddingSweep, mel_statistics, model_of

FORMAT_VERSION = 1
REFERENCE_TAIL_SECONDS = 0.5
ANGLE_STEP_DEG = 0.25
COLORS = {"centroid": ("centroid_hz", "spectral centroid (Hz)", "viridis"),
          "energy": ("energy_db", "mean energy (dB)", "magma")}  # fmt: skip


def reference_passage() -> NoteSequence:
    """A fixed 3.5 s passage in the middle register: block chords under a melody.

    Four chords (C, Am, F, G; MIDI 41-64, velocity 70) of 0.85 s every 0.875 s, and a melody
    of 14 eighth notes at 120 bpm (MIDI 67-79, velocity 96, 0.24 s each) over them. With the
    0.5 s tail of :func:`passage_roll` the model plays 4 s (499 frames).
    """
    notes: list[Note] = []
    chords = [(48, 55, 64), (45, 57, 60), (41, 53, 57), (43, 55, 59)]
    for k, chord in enumerate(chords):
        notes += [Note(p, 0.875 * k, 0.875 * k + 0.85, 70, 0, 0) for p in chord]
    melody = [72, 76, 79, 76, 72, 69, 72, 77, 76, 74, 72, 71, 74, 67]
    notes += [Note(p, 0.25 * i, 0.25 * i + 0.24, 96, 0, 0) for i, p in enumerate(melody)]
    notes.sort(key=lambda n: (n.start, n.pitch))
    return NoteSequence(notes, max(n.end for n in notes), channels={0})


def passage_roll(seq: NoteSequence, tail: float = REFERENCE_TAIL_SECONDS) -> np.ndarray:
    """The roll of ``seq`` plus ``tail`` seconds, ``float32[ROLL_CHANNELS x F]``."""
    return piano_roll(seq.notes, seq.num_frames() + round(tail * C.FRAME_RATE))


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (flattened), ties sharing their average rank."""
    a = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(a))
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def spearman_rho(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long arrays (average ranks for ties)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else math.nan


def best_direction(
    xs: np.ndarray, ys: np.ndarray, field: np.ndarray, step_deg: float = ANGLE_STEP_DEG
) -> tuple[float, float]:
    """The unit direction of the plane along which ``field`` is ordered best.

    Parameters
    ----------
    xs: float[nx], ys: float[ny]
        Grid coordinates.
    field: float[ny x nx]
        Values on the grid.
    step_deg:
        Angles from 0 to 360 degrees are tried in these steps.

    Returns
    -------
    (rho, angle_deg): the largest Spearman correlation between ``x cos a + y sin a`` and the
    field, and its angle ``a`` in degrees counter-clockwise from the +x axis (so ``rho >= 0``:
    the field grows along the direction).
    """
    gx, gy = np.meshgrid(xs, ys)
    best = (0.0, 0.0)
    for angle in np.arange(0.0, 180.0, step_deg):
        t = math.radians(angle)
        rho = spearman_rho(gx * math.cos(t) + gy * math.sin(t), field)
        if abs(rho) > abs(best[0]):
            best = (rho, float(angle))
    rho, angle = best
    return (abs(rho), angle if rho >= 0 else angle + 180.0)


def _b64_array(array: np.ndarray) -> dict[str, Any]:
    """``uint8`` quantization of a float array (see :meth:`TimbreMap.to_json_dict`)."""
    lo, hi = float(array.min()), float(array.max())
    scale = (hi - lo) / 255.0 or 1.0
    q = np.round((array.astype(np.float64) - lo) / scale).astype(np.uint8)
    data = base64.b64encode(q.tobytes()).decode("ascii")
    return {"shape": list(array.shape), "dtype": "uint8", "offset": lo, "scale": scale,
            "data": data}  # fmt: skip


def _unb64_array(obj: Mapping[str, Any]) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(obj["data"]), dtype=np.uint8).reshape(obj["shape"])
    return (obj["offset"] + obj["scale"] * q.astype(np.float32)).astype(np.float16)


@dataclass
class TimbreMap:
    """Centroid and energy of the acoustic model's output over a grid of the 2-D timbre plane.

    Attributes
    ----------
    xs: float64[nx], ys: float64[ny]
        Grid coordinates (embedding dimensions 1 and 2).
    centroid_hz: float64[ny x nx]
        Spectral centroid of the predicted mel of the reference passage at ``(xs[i], ys[j])``
        in ``centroid_hz[j, i]`` (see :func:`mel_statistics`).
    energy_db: float64[ny x nx]
        Mean energy of the predicted mel, dB.
    instruments: list of dict
        ``{"name", "program", "x", "y"}`` of the model's instruments.
    preview_xs: float64[px], preview_ys: float64[py]
        A coarser grid over the same area.
    preview_mels: float16[py x px x N_MELS x F]
        The predicted log-mels of the reference passage on the coarse grid.
    model: str
        Fingerprint of the acoustic model (:func:`mel2mel.models.export.model_fingerprint`).
    """

    xs: np.ndarray
    ys: np.ndarray
    centroid_hz: np.ndarray
    energy_db: np.ndarray
    instruments: list[dict[str, Any]]
    preview_xs: np.ndarray
    preview_ys: np.ndarray
    preview_mels: np.ndarray
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def spearman(self) -> dict[str, Any]:
        """Spearman correlations of both fields with position along their best direction.

        Returns
        -------
        ``{"method": ..., "centroid": {"rho", "angle_deg", "inside_rho", "inside_angle_deg"},
        "energy": {...}}``: for each field the unit direction (angle from +x, counter-clockwise,
        every 0.25 degrees) maximizing ``|rho|`` between ``x cos a + y sin a`` and the field
        over all grid points, oriented so that ``rho >= 0``; ``inside_*`` the same over the
        grid points inside the instruments' bounding box only (the map's margins are
        extrapolation, outside the trained points).
        """
        out: dict[str, Any] = {
            "method": f"max |Spearman rho| over directions, {ANGLE_STEP_DEG} degree steps"
        }
        ix, iy = self.inside_box()
        for key, (attr, _, _) in COLORS.items():
            values = getattr(self, attr)
            rho, angle = best_direction(self.xs, self.ys, values)
            inside = best_direction(self.xs[ix], self.ys[iy], values[np.ix_(iy, ix)])
            out[key] = {
                "rho": round(rho, 4), "angle_deg": angle,
                "inside_rho": round(inside[0], 4), "inside_angle_deg": inside[1],
            }  # fmt: skip
        return out

    def inside_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices of ``xs`` and of ``ys`` inside the instruments' bounding box."""
        px = np.array([i["x"] for i in self.instruments])
        py = np.array([i["y"] for i in self.instruments])
        ix = np.flatnonzero((self.xs >= px.min()) & (self.xs <= px.max()))
        iy = np.flatnonzero((self.ys >= py.min()) & (self.ys <= py.max()))
        return ix, iy

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (format version 1).

        Keys: ``format``, ``kind`` (``"mel2mel-timbre-map"``), ``model``, ``xs``, ``ys``,
        ``centroid_hz`` and ``energy_db`` (lists of ``ny`` rows of ``nx`` values),
        ``instruments``, ``preview_xs``, ``preview_ys``, ``frame_rate``,
        ``mel_frequencies_hz`` (band centres), ``spearman`` and ``preview_mels``: an object
        ``{"shape": [py, px, 80, F], "dtype": "uint8", "offset", "scale", "data"}`` where
        ``data`` is the base64 of the C-order ``uint8`` array ``q`` and the log-mel is
        ``offset + scale * q`` (error at most ``scale / 2``, about 0.03 nepers).
        """
        return {
            "format": FORMAT_VERSION,
            "kind": "mel2mel-timbre-map",
            "model": self.model,
            "xs": self.xs.tolist(),
            "ys": self.ys.tolist(),
            "centroid_hz": np.round(self.centroid_hz, 2).tolist(),
            "energy_db": np.round(self.energy_db, 3).tolist(),
            "instruments": self.instruments,
            "preview_xs": self.preview_xs.tolist(),
            "preview_ys": self.preview_ys.tolist(),
            "frame_rate": C.FRAME_RATE,
            "mel_frequencies_hz": np.round(mel_band_frequencies(), 2).tolist(),
            "spearman": self.spearman(),
            "preview_mels": _b64_array(self.preview_mels),
            **self.extra,
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> TimbreMap:
        """Inverse of :meth:`to_json_dict` (previews come back quantized)."""
        if data.get("kind") != "mel2mel-timbre-map" or data.get("format") != FORMAT_VERSION:
            raise UserError("not a mel2mel timbre map (format 1)")
        known = {"format", "kind", "model", "xs", "ys", "centroid_hz", "energy_db", "instruments",
                 "preview_xs", "preview_ys", "frame_rate", "mel_frequencies_hz", "spearman",
                 "preview_mels"}  # fmt: skip
        arr = {k: np.asarray(data[k], dtype=np.float64) for k in
               ("xs", "ys", "centroid_hz", "energy_db", "preview_xs", "preview_ys")}  # fmt: skip
        return cls(
            **arr,
            instruments=list(data["instruments"]),
            preview_mels=_unb64_array(data["preview_mels"]),
            model=str(data.get("model", "")),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def save_json(self, path: str | Path) -> None:
        """Write :meth:`to_json_dict` to ``path`` atomically."""
        text = json.dumps(self.to_json_dict(), separators=(",", ":"))
        atomic_write(path, lambda tmp: Path(tmp).write_text(text), ".json")

    @classmethod
    def load_json(cls, path: str | Path) -> TimbreMap:
        """Read a map written by :meth:`save_json`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read timbre map {path}: {err}") from err
        return cls.from_json_dict(data)


def _grid_axes(model: Any, resolution: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    table = model.embedding.weight.detach().double().cpu().numpy()
    lo, hi = table.min(0), table.max(0)
    pad = margin * np.maximum(hi - lo, 1e-3)
    lo, hi = lo - pad, hi + pad
    return np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)


def _reference(reference: NoteSequence | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Roll ``Tensor[1 x 176 x F]`` and active frames ``Tensor[F]`` (bool) of a passage."""
    roll = torch.from_numpy(passage_roll(reference_passage() if reference is None else reference))
    active = roll[: C.N_KEYS].amax(0) > 0
    return roll[None], active


def compute_timbre_map(
    synth: Any,
    resolution: int = 41,
    margin: float = 0.25,
    preview_resolution: int = 9,
    reference: NoteSequence | None = None,
    *,
    batch_size: int = 128,
    progress: bool | None = None,
) -> TimbreMap:
    """Play the reference passage at every grid point and measure centroid and energy.

    Parameters
    ----------
    synth:
        A :class:`~mel2mel.Synthesizer` or a :class:`~mel2mel.models.Mel2Mel` with a 2-D
        embedding.
    resolution:
        Grid points per axis.
    margin:
        Padding around the instruments' bounding box, as a fraction of its size per axis.
    preview_resolution:
        Points per axis of the coarser grid whose mels are kept (``preview_mels``).
    reference:
        The passage; default :func:`reference_passage`.
    batch_size:
        Points per batch through :class:`EmbeddingSweep` (128 is fastest on CPU).
    progress:
        Show a progress bar on stderr (default: when stderr is a terminal).
    """
    from tqdm import tqdm

    model = model_of(synth)
    if model.embedding_dim != 2:
        raise UserError(
            f"a timbre map needs a 2-D embedding; this model's has {model.embedding_dim} dimensions"
        )
    if resolution < 2 or preview_resolution < 2:
        raise UserError("resolution and preview resolution must be at least 2")
    xs, ys = _grid_axes(model, resolution, margin)
    pxs, pys = _grid_axes(model, preview_resolution, margin)
    roll, active = _reference(reference)
    gx, gy = np.meshgrid(xs, ys)
    px, py = np.meshgrid(pxs, pys)
    points = np.concatenate([np.stack([gx.ravel(), gy.ravel()], 1),
                             np.stack([px.ravel(), py.ravel()], 1)])  # fmt: skip
    n_grid = gx.size
    centroid, energy = np.empty(len(points)), np.empty(len(points))
    previews = np.empty((len(points) - n_grid, C.N_MELS, roll.shape[-1]), dtype=np.float16)
    show = sys.stderr.isatty() if progress is None else progress
    with torch.inference_mode():
        sweep = EmbeddingSweep(model, roll)
        active = active.to(sweep.rolls.device)
        bar = tqdm(total=len(points), desc="timbre map", unit="pt", disable=not show,
                   file=sys.stderr)  # fmt: skip
        for a in range(0, len(points), batch_size):
            b = min(len(points), a + batch_size)
            mels = sweep(torch.from_numpy(points[a:b]).float())[:, 0]
            cen, ene = mel_statistics(mels, active)
            centroid[a:b], energy[a:b] = cen.cpu().numpy(), ene.cpu().numpy()
            for i in range(max(a, n_grid), b):
                previews[i - n_grid] = mels[i - a].cpu().numpy()
            bar.update(b - a)
        bar.close()
    instruments = [
        {"name": i.name, "program": i.program, "x": float(v[0]), "y": float(v[1])}
        for i, v in zip(model.instruments, model.embedding.weight.detach().cpu().tolist(),
                        strict=True)
    ]  # fmt: skip
    shape = (resolution, resolution)
    return TimbreMap(
        xs, ys, centroid[:n_grid].reshape(shape), energy[:n_grid].reshape(shape), instruments,
        pxs, pys, previews.reshape(preview_resolution, preview_resolution, *previews.shape[1:]),
        model=model_fingerprint(model),
    )  # fmt: skip


def preview_mel(
    synth: Any, point: Sequence[float], reference: NoteSequence | None = None
) -> np.ndarray:
    """The predicted log-mel of the reference passage at any point, ``float32[N_MELS x F]``."""
    model = model_of(synth)
    vec = np.asarray(point, dtype=np.float32).reshape(-1)
    if vec.size != model.embedding_dim or not np.all(np.isfinite(vec)):
        raise UserError(f"a timbre point needs {model.embedding_dim} finite coordinates")
    roll, _ = _reference(reference)
    with torch.inference_mode():
        mel = EmbeddingSweep(model, roll)(torch.from_numpy(vec)[None])
    return mel[0, 0].float().cpu().numpy()


def plot_timbre_map(
    tmap: TimbreMap,
    path: str | Path,
    color: str = "centroid",
    user_timbres: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Draw one field of a map with the instruments (and user timbres) on it.

    Parameters
    ----------
    tmap:
        The map.
    path:
        Output file; ``.png`` or ``.svg`` by suffix (written atomically).
    color:
        ``"centroid"`` or ``"energy"``: the background field.
    user_timbres:
        ``{name: (x, y)}`` drawn as stars (e.g. user timbres from the library).
    """
    path = Path(path)
    if color not in COLORS:
        raise UserError(f"unknown map colour {color!r}; use centroid or energy")
    if path.suffix.lower() not in (".png", ".svg"):
        raise UserError(f"{path}: a timbre map is written as .png or .svg")
    attr, unit_label, cmap = COLORS[color]

    require("matplotlib", "train")
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.4), dpi=110)  # no pyplot: no global backend
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    extent = (tmap.xs[0], tmap.xs[-1], tmap.ys[0], tmap.ys[-1])
    img = ax.imshow(getattr(tmap, attr), origin="lower", extent=extent, cmap=cmap,
                    interpolation="bilinear", aspect="equal")  # fmt: skip
    fig.colorbar(img, ax=ax, label=unit_label, shrink=0.85)
    halo = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75}
    right = tmap.xs[0] + 0.6 * (tmap.xs[-1] - tmap.xs[0])  # labels further right go left

    def label(name: str, x: float, y: float, dy: float, **kw: Any) -> None:
        left = x > right
        ax.annotate(
            name, (x, y), xytext=(-6 if left else 6, dy), textcoords="offset points",
            ha="right" if left else "left", fontsize=8, bbox=halo, **kw,
        )  # fmt: skip

    for inst in tmap.instruments:
        ax.plot(inst["x"], inst["y"], "o", ms=6, mfc="black", mec="white", mew=1.2)
        label(inst["name"], inst["x"], inst["y"], 4)
    for name, (x, y) in (user_timbres or {}).items():
        ax.plot(x, y, "*", ms=13, mfc="#e8112d", mec="white", mew=1.0)
        label(name, x, y, -10, style="italic")
    rho = tmap.spearman()[color]
    ax.set_title(f"Timbre space coloured by {unit_label.split(' (')[0]}\n"
                 f"Spearman rho {rho['rho']:.3f} along {rho['angle_deg']:.1f} deg",
                 fontsize=10)  # fmt: skip
    ax.set_xlabel("embedding dim 1")
    ax.set_ylabel("embedding dim 2")
    fig.tight_layout()
    fmt = path.suffix.lower()[1:]
    meta = {"Date": None} if fmt == "svg" else {}  # reproducible SVG
    with rc_context({"svg.fonttype": "none"}):  # SVG text as text, not glyph outlines
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, metadata=meta), path.suffix)
    return path
