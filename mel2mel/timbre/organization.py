"""How organized a timbre space is: neighbours, families and the directions of sound.

The paper's 100-instrument map is meant to put similar instruments together. This module
measures it on a model's embedding table (and on its 3-D t-SNE) with labels that training
never saw:

* **nearest neighbour**: for each instrument, whether its nearest other instrument (Euclidean)
  is the same General MIDI program from another SoundFont, or of the same GM family (the 16
  families of 8 programs, :data:`GM_FAMILIES`); also the share of its 5 nearest that share its
  family;
* **directions of sound**: Spearman's rho between the instruments' spectral centroid or energy
  and the principal axes of the table, and the cross-validated best linear direction
  (leave-one-out least squares: the direction is fitted without the instrument it predicts);
* **chance**: the same measures on random N(0, 1) tables of the same shape (mean and 95th
  percentile over ``draws`` tables), and the expected nearest-neighbour rates of a random
  neighbour.

``mel2mel evaluate space`` runs it with the centroid and energy of the SoundFonts' own
renders of the reference passage (:mod:`mel2mel.timbre.samples`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mel2mel.timbre.map import spearman_rho

GM_FAMILIES = (
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass",
    "Reed", "Pipe", "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic", "Percussive",
    "Sound Effects",
)  # fmt: skip
K_NEIGHBOURS = 5


def gm_family(program: int) -> int:
    """Index into :data:`GM_FAMILIES` of a 0-based General MIDI program."""
    if not 0 <= program <= 127:
        raise ValueError(f"program must be in 0..127, got {program}")
    return program // 8


def family_name(program: int | None) -> str | None:
    """The GM family's name of a program, ``None`` for an unknown program."""
    return GM_FAMILIES[gm_family(program)] if isinstance(program, int) else None


def neighbour_order(x: np.ndarray) -> np.ndarray:
    """``int[N x N-1]``: every other point, nearest first (Euclidean), for each of ``x[N x D]``."""
    x = np.asarray(x, dtype=np.float64)
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0.0))
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :-1]


def neighbour_measures(
    x: np.ndarray, programs: Sequence[int], soundfonts: Sequence[str], k: int = K_NEIGHBOURS
) -> dict[str, float]:
    """Nearest-neighbour agreement of the points ``x[N x D]`` with programs and families.

    Returns
    -------
    ``same_program``: share of the instruments whose program exists in another SoundFont whose
    nearest neighbour is that program; ``same_family``: share whose nearest neighbour is in
    their GM family (the same program counts); ``family_at_k``: mean share of the ``k`` nearest
    in the family; ``same_soundfont``: share whose nearest neighbour has their SoundFont.
    """
    prog = np.asarray(programs)
    fam = prog // 8
    sf = np.asarray(soundfonts)
    order = neighbour_order(x)
    nn = order[:, 0]
    has_twin = np.array([(prog == p).sum() > 1 for p in prog])
    k = min(k, order.shape[1])
    return {
        "same_program": float((prog[nn] == prog)[has_twin].mean()) if has_twin.any() else np.nan,
        "same_family": float((fam[nn] == fam).mean()),
        "family_at_k": float((fam[order[:, :k]] == fam[:, None]).mean()),
        "same_soundfont": float((sf[nn] == sf).mean()),
    }


def random_neighbour_rates(programs: Sequence[int], soundfonts: Sequence[str]) -> dict[str, float]:
    """The rates of :func:`neighbour_measures` if each neighbour were any other at random."""
    prog = np.asarray(programs)
    fam, sf, n = prog // 8, np.asarray(soundfonts), len(prog)
    twins = np.array([(prog == p).sum() - 1 for p in prog])
    kin = np.array([(fam == f).sum() - 1 for f in fam]) / (n - 1)
    return {
        "same_program": float((twins[twins > 0] / (n - 1)).mean()) if (twins > 0).any() else np.nan,
        "same_family": float(kin.mean()),
        "family_at_k": float(kin.mean()),
        "same_soundfont": float((np.array([(sf == s).sum() - 1 for s in sf]) / (n - 1)).mean()),
    }


def loo_direction_rho(x: np.ndarray, values: np.ndarray) -> float:
    """Spearman's rho of ``values[N]`` with its leave-one-out linear prediction from ``x[N x D]``.

    Each instrument's value is predicted by least squares (with an intercept) fitted on the
    other ``N - 1``, so a direction that only fits noise scores near 0.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    a = np.hstack([x, np.ones((len(x), 1))])
    pred = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef, *_ = np.linalg.lstsq(a[keep], y[keep], rcond=None)
        pred[i] = a[i] @ coef
    return spearman_rho(pred, y)


def direction_measures(x: np.ndarray, features: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per feature: |rho| with each of the first 3 principal axes and the LOO best direction."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = centred @ vt[: min(3, vt.shape[0])].T
    out: dict[str, Any] = {}
    for name, v in features.items():
        out[name] = {
            "pc_abs_rho": [abs(spearman_rho(axes[:, j], v)) for j in range(axes.shape[1])],
            "loo_direction_rho": loo_direction_rho(x, v),
        }
    return out


def _mean_p95(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):  # e.g. no program in two SoundFonts: no same-program rate at all
        return {"mean": np.nan, "p95": np.nan}
    return {"mean": float(v.mean()), "p95": float(np.percentile(v, 95))}


def organization_report(
    embeddings: np.ndarray,
    programs: Sequence[int],
    soundfonts: Sequence[str],
    features: dict[str, np.ndarray],
    *,
    positions: np.ndarray | None = None,
    draws: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Every measure of the module docstring for one table (and its 3-D view).

    Parameters
    ----------
    embeddings: float[N x E]
        The model's embedding table.
    programs, soundfonts:
        Each instrument's 0-based GM program and SoundFont name.
    features:
        Per-instrument values to find directions for, e.g. ``{"centroid_hz": ..., "energy_db":
        ...}``, each ``float[N]``.
    positions: float[N x 3], optional
        The 3-D t-SNE of the table.
    draws:
        Random tables for the chance levels.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    report: dict[str, Any] = {
        "instruments": len(emb),
        "families": len(set(np.asarray(programs) // 8)),
        "embedding": {
            "neighbours": neighbour_measures(emb, programs, soundfonts),
            "directions": direction_measures(emb, features),
        },
    }
    if positions is not None:
        report["tsne"] = {"neighbours": neighbour_measures(positions, programs, soundfonts)}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(draws):
        table = rng.standard_normal(emb.shape)
        found = neighbour_measures(table, programs, soundfonts)
        for name, v in direction_measures(table, features).items():
            found[f"{name}_loo_direction_rho"] = v["loo_direction_rho"]
        for key, v in found.items():
            samples.setdefault(key, []).append(v)
    report["chance"] = {
        "draws": draws,
        "random_neighbour": random_neighbour_rates(programs, soundfonts),
        "random_table": {k: _mean_p95(v) for k, v in samples.items()},
    }
    per = []
    order = neighbour_order(emb)
    for i, p in enumerate(programs):
        j = int(order[i, 0])
        per.append({"index": i, "nearest": j, "same_program": int(programs[j]) == int(p),
                    "same_family": gm_family(int(programs[j])) == gm_family(int(p))})  # fmt: skip
    report["nearest"] = per
    return report
