"""The listening test's results as text, CSV and JSON (``mel2mel listen results``, the
results page of :mod:`mel2mel.web.listening`).

* :func:`format_summary`: the MOS table per configuration, then per configuration and
  instrument, with 95 % confidence intervals and the paper's column;
* :func:`ratings_csv`: every stored rating, one row each (listener ids are the database's
  numbers, never their tokens), with whether its listener was flagged;
* :func:`summary_csv` and :func:`summary_dict`: the summary's rows.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mel2mel.listening.stats import PAPER_MOS, Row, Summary
from mel2mel.listening.store import RATING_COLUMNS, Rating

SUMMARY_COLUMNS = (
    "config",
    "instrument",
    "label",
    "role",
    "listeners",
    "ratings",
    "mos",
    "sd",
    "ci95_low",
    "ci95_high",
    "ci95_half_width",
    "paper_mos",
    "paper_se",
    "paper_condition",
)


def _number(x: float, digits: int = 3) -> float | None:
    return None if math.isnan(x) else round(x, digits)


def row_dict(row: Row) -> dict[str, Any]:
    """A summary row as a flat record (``SUMMARY_COLUMNS``; NaN as ``None``)."""
    m, p = row.mos, row.paper
    return {
        "config": row.config,
        "instrument": row.instrument or "",
        "label": row.label,
        "role": row.role,
        "listeners": row.listeners,
        "ratings": m.n,
        "mos": _number(m.mean),
        "sd": _number(m.sd),
        "ci95_low": _number(m.lo),
        "ci95_high": _number(m.hi),
        "ci95_half_width": _number(m.half_width),
        "paper_mos": p.mos if p else None,
        "paper_se": p.se if p else None,
        "paper_condition": p.condition if p else "",
    }


def summary_dict(summary: Summary) -> dict[str, Any]:
    """The summary as JSON-ready data (the web page's ``/api/results``)."""
    return {
        "listeners": summary.listeners,
        "ratings": summary.ratings,
        "flagged": [{"listener": k, "why": v} for k, v in sorted(summary.flagged.items())],
        "include_flagged": summary.include_flagged,
        "configs": [row_dict(r) for r in summary.configs],
        "instruments": [row_dict(r) for r in summary.instruments],
        "paper": [
            {"config": k, "condition": v.condition, "mos": v.mos, "se": v.se}
            for k, v in PAPER_MOS.items()
        ],
    }


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def summary_csv(summary: Summary) -> str:
    """The summary's rows, per configuration (instrument empty) then per instrument."""
    rows = [row_dict(r) for r in (*summary.configs, *summary.instruments)]
    return _csv(
        SUMMARY_COLUMNS, [["" if r[c] is None else r[c] for c in SUMMARY_COLUMNS] for r in rows]
    )


def ratings_csv(ratings: Sequence[Rating], flagged: dict[int, str]) -> str:
    """Every rating (``RATING_COLUMNS``, the time in UTC ISO 8601, booleans as 1/0) and
    ``flagged`` (1 when its listener failed the attention checks)."""
    out = []
    for r in ratings:
        row: list[Any] = []
        for name in RATING_COLUMNS:
            value = getattr(r, name)
            if name == "time":
                value = datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds")
            row.append("" if value is None else int(value) if isinstance(value, bool) else value)
        out.append([*row, int(r.listener in flagged)])
    return _csv([*RATING_COLUMNS, "flagged"], out)


def _ci(row: Row) -> str:
    m = row.mos
    if math.isnan(m.half_width):
        return f"{m.mean:4.2f}" + " " * 17
    return f"{m.mean:4.2f} +/- {m.half_width:4.2f} [{m.lo:4.2f}, {m.hi:4.2f}]"


def _table(rows: Sequence[Row], by_instrument: bool) -> list[str]:
    width = max([len(r.config) for r in rows] + [6])
    iwidth = max([len(r.instrument or "") for r in rows] + [10]) if by_instrument else 0
    inst = f"{'instrument':<{iwidth}}  " if by_instrument else ""
    tail = "" if by_instrument else f"  {'paper MOS +/- SE':<16}  label"
    head = f"{'config':<{width}}  {inst}{'n':>5}  {'lst':>3}  {'MOS +/- 95 % CI':<29}{tail}"
    lines = [head.rstrip()]
    for r in rows:
        inst = f"{r.instrument or '':<{iwidth}}  " if by_instrument else ""
        paper = f"{r.paper.mos:.3f} +/- {r.paper.se:.3f}" if r.paper else ""
        tail = "" if by_instrument else f"  {paper:<16}  {r.label}"
        lines.append(
            f"{r.config:<{width}}  {inst}{r.mos.n:>5}  {r.listeners:>3}  "
            f"{_ci(r):<29}{tail}".rstrip()
        )
    return lines


def format_summary(summary: Summary) -> str:
    """The summary as plain text: counts, flagged listeners, the two MOS tables and the
    paper's conditions that the gallery had no configuration for."""
    skipped = "included" if summary.include_flagged else "excluded"
    flagged = len(summary.flagged)
    lines = [
        f"{summary.listeners} listener(s), {summary.ratings} test ratings; {flagged} "
        f"listener(s) failed the attention checks ({skipped})"
    ]
    lines += [f"  listener {k}: {why}" for k, why in sorted(summary.flagged.items())]
    if not summary.configs:
        return "\n".join([*lines, "no test ratings yet"])
    lines += ["", "MOS per configuration (n ratings, lst listeners; 95 % CI of a t-distribution)"]
    lines += _table(summary.configs, False)
    lines += ["", "MOS per configuration and instrument"]
    lines += _table(summary.instruments, True)
    ours = {r.config for r in summary.configs}
    missing = [(k, v) for k, v in PAPER_MOS.items() if k not in ours]
    if missing:
        lines += ["", "The paper's other conditions (MOS +/- SE):"]
        lines += [f"  {v.condition:<36} {v.mos:.3f} +/- {v.se:.3f}  ({k})" for k, v in missing]
    return "\n".join(lines)
