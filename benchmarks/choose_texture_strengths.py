"""Choose the texture post-net's strength per instrument from a valid-split run of
``eval_transcription.py`` (docs/TEXTURE.md, "A strength per instrument").

For each instrument: the strength whose renders the classifier recognizes most often, and among
the strengths within one clip of it the one whose onset F1 is closest to FluidSynth's (the
higher ratio); strengths above ``--max`` (default 1, where the post-net's frame-to-frame change
matches FluidSynth's) are not considered. Prints a table and the ``--strength`` arguments of
``mel2mel export texture``::

    OMP_NUM_THREADS=1 python benchmarks/eval_transcription.py --data data/perf10 --split valid \\
        --kind performed --pieces 16 --vocoder fast --model runs/export-X/acoustic \\
        --texture 0 --texture 0.2 --texture 0.4 --texture 0.6 --texture 0.85 --texture 1 \\
        --json valid.json
    python benchmarks/choose_texture_strengths.py valid.json
"""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REFERENCE = "FluidSynth"


@dataclass(frozen=True)
class Option:
    """One strength's result for one instrument."""

    strength: float
    recognized: int
    clips: int
    onset_ratio: float  # onset F1 over FluidSynth's

    @property
    def share(self) -> float:
        return self.recognized / max(self.clips, 1)


def onset_f1(counts: dict[str, int]) -> float:
    return 2 * counts["onset"] / max(counts["ref"] + counts["est"], 1)


def options(report: dict[str, Any], highest: float) -> dict[str, list[Option]]:
    """Every instrument's results per strength (the renderers labelled ``... texS``)."""
    names = report["instruments"]
    out: dict[str, list[Option]] = {n: [] for n in names}
    for label, matrix in report["confusion"].items():
        if label == REFERENCE or " tex" not in label:
            continue
        strength = float(label.rsplit("tex", 1)[1])
        if strength > highest:
            continue
        for i, name in enumerate(names):
            reference = onset_f1(report["counts"][REFERENCE][name])
            ratio = onset_f1(report["counts"][label][name]) / max(reference, 1e-9)
            out[name].append(Option(strength, matrix[i][i], sum(matrix[i]), ratio))
    if not any(out.values()):
        raise SystemExit("no renders at several strengths here (run with --texture S ...)")
    return out


def choose(results: list[Option]) -> Option:
    """Most recognized; within one clip of it, the better onset F1 ratio (then the weaker)."""
    best = max(o.share for o in results)
    near = [o for o in results if o.share >= best - 1.0 / max(o.clips, 1) - 1e-9]
    return max(near, key=lambda o: (o.onset_ratio, -o.strength))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="the --json of eval_transcription.py")
    ap.add_argument("--max", type=float, default=1.0, help="highest strength considered (1)")
    args = ap.parse_args(argv)
    by_name = options(json.loads(args.report.read_text()), args.max)
    strengths = sorted({o.strength for rows in by_name.values() for o in rows})
    print("| instrument | " + " | ".join(f"{s:g}" for s in strengths) + " | chosen |")
    print("|---|" + "---|" * (len(strengths) + 1))
    chosen = {}
    for name, rows in by_name.items():
        pick = chosen[name] = choose(rows)
        cells = {o.strength: f"{o.share:.0%}" for o in rows}
        row = " | ".join(cells.get(s, "") for s in strengths)
        print(f"| {name} | {row} | **{pick.strength:g}** (onset F1 ratio {pick.onset_ratio:.2f}) |")
    print()
    print(" ".join(f"--strength {shlex.quote(f'{n}={o.strength:g}')}" for n, o in chosen.items()))


if __name__ == "__main__":
    main()
