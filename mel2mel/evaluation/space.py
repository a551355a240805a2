"""``mel2mel evaluate space``: how organized a many-instrument model's timbre space is.

Runs :func:`mel2mel.timbre.organization.organization_report` on a model's embedding table and
its 3-D t-SNE (:func:`mel2mel.timbre.space3d.tsne_3d`), with each instrument's spectral
centroid and energy measured on its SoundFont's own render of the reference passage
(:mod:`mel2mel.timbre.samples`; FluidSynth needed) or, with ``features="model"``, on the
model's prediction of it.

As a reference for the neighbour measures it also asks how far the *sound* groups the
instruments: the same measures on the SoundFonts' own renders of the reference passage, each
a log-mel (80 bins x the passage's frames) with its mean level removed, compared by Euclidean
distance (``report["soundfont_audio"]``). A table organized by sound can hardly group the GM
families better than the sound itself does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel.audio import log_mel
from mel2mel.errors import UserError
from mel2mel.timbre.map import passage_roll, reference_passage
from mel2mel.timbre.organization import (
    GM_FAMILIES,
    gm_family,
    neighbour_measures,
    organization_report,
)
from mel2mel.timbre.samples import SoundFontSamples, reference_midi, soundfont_for
from mel2mel.timbre.space3d import instrument_statistics, tsne_3d
from mel2mel.timbre.sweep import mel_statistics

FEATURE_SOURCES = ("soundfont", "model")


def soundfont_statistics(
    model: Any, samples: SoundFontSamples, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid (Hz), energy (dB) and log-mel of every instrument's SoundFont on the reference
    passage: ``float[N]``, ``float[N]``, ``float32[N x 80 x T]``.

    Measured like :func:`mel2mel.timbre.space3d.instrument_statistics` (same frames, same
    formulas), on the log-mel of FluidSynth's audio instead of the model's prediction.
    """
    import torch
    from tqdm import tqdm

    roll = passage_roll(reference_passage())
    frames = roll.shape[1]
    active = torch.from_numpy(roll[: roll.shape[0] // 2].sum(0) > 0)
    midi = reference_midi()
    mels = []
    for inst in tqdm(
        model.instruments, desc="SoundFont renders", disable=None if progress else True
    ):
        mel = log_mel(samples.render(inst, midi))[:, :frames]
        if mel.shape[1] < frames:  # FluidSynth stops at the last release: pad with silence
            mel = np.pad(mel, ((0, 0), (0, frames - mel.shape[1])), constant_values=mel.min())
        mels.append(mel)
    mels = np.stack(mels)
    centroid, energy = mel_statistics(torch.from_numpy(mels), active)
    return centroid.numpy(), energy.numpy(), mels


def evaluate_space(
    model: Any,
    *,
    features: str = "soundfont",
    cache_dir: str | os.PathLike | None = None,
    draws: int = 200,
    progress: bool = False,
) -> dict[str, Any]:
    """The organization report of ``model`` (a Mel2Mel with programs for every instrument)."""
    if features not in FEATURE_SOURCES:
        raise UserError(f"features must be one of {', '.join(FEATURE_SOURCES)}, got {features!r}")
    missing = [i.name for i in model.instruments if i.program is None]
    if missing:
        raise UserError(
            f"the model's instruments need General MIDI programs; {len(missing)} have none "
            f"(e.g. {missing[0]!r})"
        )
    if len(model.instruments) < 3:
        raise UserError("a timbre space needs at least 3 instruments")
    emb = model.embedding.weight.detach().cpu().double().numpy()
    programs = [int(i.program) for i in model.instruments]
    fonts = [soundfont_for(i).name for i in model.instruments]
    sound = None
    if features == "soundfont":
        samples = SoundFontSamples(cache_dir)
        centroid, energy, mels = soundfont_statistics(model, samples, progress)
        sound = (mels - mels.mean(axis=(1, 2), keepdims=True)).reshape(len(mels), -1)
    else:
        centroid, energy, _ = instrument_statistics(model)
    positions, _, _ = tsne_3d(emb)
    report = organization_report(
        emb,
        programs,
        fonts,
        {"centroid_hz": centroid, "energy_db": energy},
        positions=positions,
        draws=draws,
    )
    report["features_from"] = features
    if sound is not None:
        report["soundfont_audio"] = {"neighbours": neighbour_measures(sound, programs, fonts)}
    for row in report["nearest"]:
        i, j = row["index"], row["nearest"]
        row.update(name=model.instruments[i].name, nearest_name=model.instruments[j].name,
                   family=GM_FAMILIES[gm_family(programs[i])])  # fmt: skip
    for k, row in enumerate(report["nearest"]):
        row.update(centroid_hz=round(float(centroid[k]), 2), energy_db=round(float(energy[k]), 3),
                   soundfont=fonts[k])  # fmt: skip
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report as a few printed lines: each measure beside its chance level."""
    chance = report["chance"]["random_table"]
    rand = report["chance"]["random_neighbour"]
    lines = [
        f"{report['instruments']} instruments in {report['families']} GM families; "
        f"chance from {report['chance']['draws']} random N(0, 1) tables (mean / 95th pct)",
        f"{'measure':<34} {'embedding':>9} {'t-SNE':>7} {'chance':>15} {'random nn':>9} "
        f"{'SoundFont audio':>15}",
    ]
    emb, tsne = report["embedding"]["neighbours"], report.get("tsne", {}).get("neighbours", {})
    sound = report.get("soundfont_audio", {}).get("neighbours", {})
    for key in ("same_program", "same_family", "family_at_k", "same_soundfont"):
        c = chance[key]
        lines.append(
            f"{'nearest neighbour ' + key:<34} {emb[key]:>9.3f} {tsne.get(key, np.nan):>7.3f} "
            f"{c['mean']:>7.3f} / {c['p95']:.3f} {rand[key]:>9.3f} {sound.get(key, np.nan):>15.3f}"
        )
    for name, d in report["embedding"]["directions"].items():
        c = chance[f"{name}_loo_direction_rho"]
        pcs = ", ".join(f"{r:.2f}" for r in d["pc_abs_rho"])
        lines.append(
            f"{name + ' LOO direction rho':<34} {d['loo_direction_rho']:>9.3f} {'':>7} "
            f"{c['mean']:>7.3f} / {c['p95']:.3f}   (|rho| with PC1-3: {pcs})"
        )
    return lines


def write_space_report(report: dict[str, Any], out: Path) -> Path:
    """``out/organization.json``."""
    from mel2mel.evaluation.report import write_json

    def finite(v: Any) -> Any:  # JSON has no NaN
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, list):
            return [finite(x) for x in v]
        return None if isinstance(v, float) and not np.isfinite(v) else v

    out.mkdir(parents=True, exist_ok=True)
    path = out / "organization.json"
    write_json(path, finite(report))
    return path
