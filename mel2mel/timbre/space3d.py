"""The 3-D timbre space of a many-instrument model: t-SNE of its embeddings, for the web app.

The paper's demo shows the 100-instrument model's 10-D embedding table projected to 3-D with
t-SNE, each instrument a dot coloured by spectral centroid or mean energy; clicking a dot plays
the instrument. :func:`space3d` computes that view:

* positions: scikit-learn's t-SNE (3 components, PCA initialization, a fixed ``random_state``)
  of the embedding table, centred and scaled so the farthest point is at distance 1;
* colours: the model plays one fixed reference passage
  (:func:`mel2mel.timbre.map.reference_passage`) with each instrument, and each predicted mel
  is reduced to its spectral centroid (Hz) and mean energy (dB) over the frames where a note
  sounds (:func:`mel2mel.timbre.map.mel_statistics`), mapped to ``#rrggbb`` through matplotlib's
  ``viridis`` (centroid) and ``magma`` (energy) colour maps.

The JSON (``format`` 1) holds no audio: each instrument's 10 embedding values are there, and
the web app renders a clip on demand with the shipped model, which costs less than the 100
clips would weigh (a 4 s clip is 30-60 kB even as compressed audio)::

    {"format": 1, "model": "acoustic100", "embedding_dim": 10, "tsne": {...},
     "reference": {"seconds": 4.5, "frames": 625},
     "instruments": [{"name": "Trumpet (FluidR3)", "soundfont": "FluidR3_GM.sf2",
                      "program": 56, "index": 0, "embedding": [...10 floats],
                      "position": [x, y, z], "centroid_hz": 1234.5, "energy_db": -3.2,
                      "color_centroid": "#rrggbb", "color_energy": "#rrggbb"}, ...]}

``mel2mel plot space3d`` writes the JSON and a static 3-D plot (matplotlib ``mplot3d``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C
from mel2mel import pretrained
from mel2mel.data.instrument_sets import INSTRUMENT_SETS, SOUNDFONTS
from mel2mel.errors import UserError, require
from mel2mel.fileio import atomic_write
from mel2mel.instruments import Instrument, slugify
from mel2mel.timbre.map import mel_statistics, passage_roll, reference_passage
from mel2mel.timbre.organization import GM_FAMILIES, family_name

FORMAT_VERSION = 1
DEFAULT_MODEL = pretrained.path(pretrained.ACOUSTIC100)
TSNE_SEED = 0
TSNE_MAX_PERPLEXITY = 10.0  # about an instrument's kin in the space100 set (docs/SPACE100.md)
COLOR_MAPS = {"centroid": "viridis", "energy": "magma"}
MARKERS = ("o", "^", "s", "D", "v", "P")


def tsne_3d(embeddings: np.ndarray, *, seed: int = TSNE_SEED) -> tuple[np.ndarray, float, str]:
    """3-D t-SNE of ``float[N x E]`` embeddings -> (``float64[N x 3]``, perplexity, init).

    The perplexity is ``min(10, (N - 1) / 3)`` (scikit-learn needs it below ``N``; a third of
    the neighbours keeps small sets meaningful). The perplexity is about the neighbourhood
    t-SNE keeps; 10 is the size of a General MIDI family in the 100-instrument set (6-10), and
    keeps the embedding's nearest neighbours better than scikit-learn's default 30 (see
    docs/SPACE100.md). The initialization is PCA, or random where there are fewer than 3
    points or dimensions. Positions are centred on their mean and scaled so that the farthest
    point lies at distance 1.
    """
    require("sklearn", "train")
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise UserError(f"t-SNE needs at least 2 embeddings, got shape {x.shape}")
    perplexity = float(min(TSNE_MAX_PERPLEXITY, max(1.0, (len(x) - 1) / 3)))
    init = "pca" if min(x.shape) >= 3 else "random"  # PCA needs 3 samples and 3 dimensions
    tsne = TSNE(3, perplexity=perplexity, init=init, learning_rate="auto", random_state=seed)
    pos = tsne.fit_transform(x)
    pos -= pos.mean(axis=0)
    pos /= max(float(np.linalg.norm(pos, axis=1).max()), 1e-12)
    return pos, perplexity, init


def instrument_statistics(model: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Spectral centroid (Hz) and mean energy (dB) of every instrument on the reference passage.

    Parameters
    ----------
    model:
        A :class:`~mel2mel.models.acoustic.Mel2Mel` (N instruments).

    Returns
    -------
    (centroid_hz float64[N], energy_db float64[N], frames of the passage)
    """
    import torch

    roll = torch.from_numpy(passage_roll(reference_passage()))  # 176 x F
    active = roll[: roll.shape[0] // 2].sum(0) > 0
    n = model.config.n_instruments
    with torch.inference_mode():
        mel = model.infer(roll[None].expand(n, -1, -1), instrument=torch.arange(n))  # N x M x F
        centroid, energy = mel_statistics(mel, active)
    return centroid.numpy(), energy.numpy(), int(roll.shape[1])


def hex_colors(values: np.ndarray, cmap: str) -> list[str]:
    """``#rrggbb`` of each value through a matplotlib colour map, scaled to the values' range."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    v = np.asarray(values, dtype=np.float64)
    span = float(v.max() - v.min())
    t = (v - v.min()) / span if span > 0 else np.full_like(v, 0.5)
    return [to_hex(c) for c in colormaps[cmap](t)]


def _soundfonts_by_name() -> dict[str, str]:
    """Instrument name -> SoundFont file name, from the named instrument sets."""
    out = {}
    for spec in INSTRUMENT_SETS.values():
        for name, _, key in spec():
            if key is not None:
                out[name] = SOUNDFONTS[key].path.name
    return out


def space3d(model: Any, *, name: str = "model", seed: int = TSNE_SEED) -> dict[str, Any]:
    """The JSON document (see the module docstring) of a model's 3-D timbre space."""
    emb = model.embedding.weight.detach().cpu().double().numpy()  # N x E
    pos, perplexity, init = tsne_3d(emb, seed=seed)
    centroid, energy, frames = instrument_statistics(model)
    colors = {
        "centroid": hex_colors(centroid, COLOR_MAPS["centroid"]),
        "energy": hex_colors(energy, COLOR_MAPS["energy"]),
    }
    fonts = _soundfonts_by_name()
    instruments = []
    for i, inst in enumerate(model.instruments):
        instruments.append(
            {
                "name": inst.name,
                "soundfont": fonts.get(inst.name),
                "program": inst.program,
                "index": i,
                "embedding": [round(float(v), 6) for v in emb[i]],
                "position": [round(float(v), 5) for v in pos[i]],
                "family": family_name(inst.program),
                "centroid_hz": round(float(centroid[i]), 2),
                "energy_db": round(float(energy[i]), 3),
                "color_centroid": colors["centroid"][i],
                "color_energy": colors["energy"][i],
            }
        )

    return {
        "format": FORMAT_VERSION,
        "model": name,
        "embedding_dim": int(emb.shape[1]),
        "tsne": {"components": 3, "perplexity": perplexity, "random_state": seed, "init": init},
        "reference": {"frames": frames, "seconds": round(frames / C.FRAME_RATE, 3)},
        "color_maps": dict(COLOR_MAPS),
        "instruments": instruments,
    }


def write_json(doc: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the document atomically (compact one-instrument-per-line JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {k: v for k, v in doc.items() if k != "instruments"}
    rows = ",\n  ".join(json.dumps(i, separators=(",", ":")) for i in doc["instruments"])
    text = json.dumps(head)[:-1] + ', "instruments": [\n  ' + rows + "\n]}\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def plot_space3d(doc: dict[str, Any], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """A static PNG: the 3-D positions twice, coloured by centroid and by energy.

    Marker shapes tell the SoundFonts apart; the paper's ten programs are labelled.
    """
    require("matplotlib", "train")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    insts = doc["instruments"]
    pos = np.array([i["position"] for i in insts])
    fonts = sorted({str(i["soundfont"]) for i in insts})
    fig = plt.figure(figsize=(19, 6.2), dpi=110)
    for k, (field, label, key) in enumerate(
        [
            ("centroid_hz", "spectral centroid (Hz)", "centroid"),
            ("energy_db", "mean energy (dB)", "energy"),
        ]
    ):
        ax = fig.add_subplot(1, 3, k + 1, projection="3d")
        values = np.array([i[field] for i in insts])
        norm = Normalize(values.min(), values.max())
        for f, font in enumerate(fonts):
            sel = [j for j, i in enumerate(insts) if str(i["soundfont"]) == font]
            ax.scatter(
                *pos[sel].T,
                c=values[sel],
                cmap=COLOR_MAPS[key],
                norm=norm,
                marker=MARKERS[f % len(MARKERS)],
                s=34,
                edgecolors="k",
                linewidths=0.3,
                depthshade=False,
                label=font if font != "None" else "(no SoundFont)",
            )
        for j, inst in enumerate(insts):
            if inst["program"] in C.PAPER_INSTRUMENTS.values():
                ax.text(*pos[j], inst["name"], fontsize=4.5, alpha=0.8)
        ax.set_title(f"coloured by {label}", fontsize=10)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.set_zticklabels([])
        fig.colorbar(ScalarMappable(norm, COLOR_MAPS[key]), ax=ax, shrink=0.55, label=label)
        if k == 0 and len(fonts) > 1:
            ax.legend(loc="upper left", fontsize=7, title="marker = SoundFont", title_fontsize=7)
    _family_panel(fig.add_subplot(1, 3, 3, projection="3d"), insts, pos)
    n, e = len(insts), doc.get("embedding_dim")
    fig.suptitle(title or f"{doc.get('model')}: 3-D t-SNE of {n} instruments' {e}-D embeddings")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


FAMILY_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#ad494a",
    "#637939",
    "#843c39",
    "#7b4173",
    "#3182bd",
)  # fmt: skip  (the web page's, one per GM family)


def _family_panel(ax: Any, insts: list[dict[str, Any]], pos: np.ndarray) -> None:
    """The third view: one colour per General MIDI family, with a legend."""
    for f, family in enumerate(GM_FAMILIES):
        sel = [j for j, i in enumerate(insts) if family_name(i.get("program")) == family]
        if sel:
            ax.scatter(*pos[sel].T, color=FAMILY_COLORS[f], s=34, edgecolors="k",
                       linewidths=0.3, depthshade=False, label=family)  # fmt: skip
    ax.set_title("coloured by General MIDI family", fontsize=10)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_zticklabels([])
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title="GM family",
              title_fontsize=7)  # fmt: skip


def soundfont_references(
    instruments: list[dict[str, Any]],
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    missing_ok: bool = False,
) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Each instrument's SoundFont (FluidSynth) playing the reference passage:
    ``(instrument, float32[N])`` at FluidSynth's own level, cached
    (:class:`~mel2mel.timbre.samples.SoundFontSamples`).

    ``instruments``: dicts with ``name`` and ``program`` (a space document's). With
    ``missing_ok``, an instrument whose SoundFont is not installed is left out; otherwise its
    UserError (naming the Debian package) is raised.
    """
    from tqdm import tqdm

    from mel2mel.timbre.samples import SoundFontSamples, reference_midi, soundfont_for

    samples = SoundFontSamples(cache_dir)
    midi = reference_midi()
    for inst in tqdm(instruments, desc="samples", disable=None if progress else True):
        instrument = Instrument(inst["name"], inst["program"])
        if missing_ok:
            try:
                soundfont_for(instrument)
            except UserError:  # its SoundFont is not installed
                continue
        yield inst, samples.render(instrument, midi)


def write_clip(folder: Path, inst: dict[str, Any], kind: str, audio: np.ndarray) -> None:
    """``audio`` (``float[N]``, 16 kHz) as ``folder/NNN-slug.KIND.ogg`` (Ogg/Opus), its path
    relative to ``folder``'s parent set as ``inst["sample_KIND"]``."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{inst['index']:03d}-{slugify(inst['name'], sep='-')}.{kind}.ogg"
    clip = np.clip(audio, -1.0, 1.0)
    atomic_write(path, lambda tmp: sf.write(tmp, clip, C.SAMPLE_RATE, format="OGG",
                 subtype="OPUS"), suffix=".ogg")  # fmt: skip
    inst[f"sample_{kind}"] = f"{folder.name}/{path.name}"


def write_soundfont_samples(
    instruments: list[dict[str, Any]],
    folder: str | os.PathLike,
    *,
    seconds: float | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> int:
    """Each instrument's SoundFont clip of the reference passage, at FluidSynth's own level (as
    the web app's "SoundFont sample" plays it), as ``folder/NNN-slug.soundfont.ogg``, with the
    key ``sample_soundfont`` added to each instrument (:func:`write_clip`); ``seconds`` cuts
    the clips (``None``: the whole render, the release included). An instrument whose
    SoundFont is not installed gets no clip. Returns the number of clips written.
    """
    n = None if seconds is None else round(seconds * C.SAMPLE_RATE)
    written = 0
    refs = soundfont_references(instruments, cache_dir=cache_dir, progress=progress,
                                missing_ok=True)  # fmt: skip
    for inst, audio in refs:
        write_clip(Path(folder), inst, "soundfont", audio[:n])
        written += 1
    return written


def write_samples(
    model: Any,
    doc: dict[str, Any],
    folder: str | os.PathLike,
    *,
    vocoder: Any = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> Path:
    """Each dot's two clips of the reference passage, side by side: the model's rendition and
    its SoundFont's (FluidSynth, :func:`soundfont_references`), as
    ``folder/NNN-slug.model.ogg`` and ``.soundfont.ogg`` (Ogg/Opus, one gain per pair so their
    levels compare); adds their paths, relative to ``folder``'s parent, to each instrument of
    ``doc`` (keys ``sample_model``, ``sample_soundfont``).

    Parameters
    ----------
    model:
        The :class:`~mel2mel.models.acoustic.Mel2Mel` of ``doc``.
    vocoder:
        A :class:`~mel2mel.vocoders.base.Vocoder`; ``None`` for the shipped fast vocoder.
    """
    import torch

    from mel2mel.models.export import load_pretrained_vocoder

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    voc = vocoder if vocoder is not None else load_pretrained_vocoder("fast")
    from mel2mel.models.beats import BeatNotes

    passage = passage_roll(reference_passage())
    roll = torch.from_numpy(passage)[None]  # 1 x 176 x F
    beats = model.drawn_beats
    notes = None if beats is None else BeatNotes.from_roll(passage)
    refs = soundfont_references(doc["instruments"], cache_dir=cache_dir, progress=progress)
    for inst, real in refs:
        with torch.inference_mode():
            mel = model.infer(roll, instrument=inst["index"])
            emb = model.embed(inst["index"])
            mel = model.contrast(model.sharpen(mel, emb), emb, roll)  # as the synthesizer plays it
            if notes is not None:
                mel = beats.apply(mel[0], notes, 0, emb[0])[None]
            ours = voc.vocode(mel).reshape(-1).cpu().numpy()
        n = min(len(ours), len(real))
        peak = max(float(np.abs(ours[:n]).max()), float(np.abs(real[:n]).max()), 1e-6)
        for kind, audio in (("model", ours[:n]), ("soundfont", real[:n])):
            write_clip(folder, inst, kind, (0.5 / peak) * audio)  # -6 dBFS for the louder
    return folder
