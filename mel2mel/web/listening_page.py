"""The listening test's results page: the MOS tables and the paper's, as plain HTML.

Rendered on the server from :func:`mel2mel.listening.report.summary_dict` (every text
escaped), styled by the page's ``static/style.css`` and ``static/listen.css``, with links to
the CSV exports.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlencode


def _ci(row: dict[str, Any]) -> str:
    if row["mos"] is None:
        return "-"
    if row["ci95_half_width"] is None:
        return f"{row['mos']:.2f}"
    return (
        f"{row['mos']:.2f} ± {row['ci95_half_width']:.2f} "
        f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}]"
    )


def _table(rows: list[dict[str, Any]], *, instrument: bool) -> str:
    head = [
        "configuration",
        *(["instrument"] if instrument else ["label"]),
        "listeners",
        "ratings",
        "MOS ± 95 % CI",
        *([] if instrument else ["paper MOS ± SE"]),
    ]
    out = ["<table class='mos'><thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for r in rows:
        cells = [
            r["config"],
            r["instrument"] if instrument else r["label"],
            r["listeners"],
            r["ratings"],
            _ci(r),
        ]
        if not instrument:
            paper = r["paper_mos"]
            cells.append("" if paper is None else f"{paper:.3f} ± {r['paper_se']:.3f}")
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def results_html(title: str, data: dict[str, Any], key: str | None) -> str:
    """The results page of :func:`~mel2mel.listening.report.summary_dict`'s ``data``;
    ``key`` (the results key, if any) goes into the links: the CSV files of this view, and
    the same page with or without the flagged listeners."""
    keyed = {"key": key} if key else {}
    counted = {"include_flagged": "true"} if data["include_flagged"] else {}
    query = html.escape("?" + urlencode({**keyed, **counted}))  # this view's CSV files
    other = html.escape("?" + urlencode({**keyed, **({} if counted else {"include_flagged": 1})}))
    flagged = "included" if counted else "excluded"
    toggle_text = "leave them out" if counted else "count them"
    notes = "".join(
        f"<li>listener {f['listener']}: {html.escape(f['why'])}</li>" for f in data["flagged"]
    )
    paper = "".join(
        f"<tr><td>{html.escape(p['condition'])}</td><td>{html.escape(p['config'])}</td>"
        f"<td>{p['mos']:.3f} ± {p['se']:.3f}</td></tr>"
        for p in data["paper"]
    )
    body = (
        f"<p>{data['listeners']} listener(s), {data['ratings']} test ratings. "
        f"{len(data['flagged'])} listener(s) failed the attention checks ({flagged}: "
        f"<a href='/results{other}'>{toggle_text}</a>).</p>"
        f"<ul class='muted'>{notes}</ul>"
        "<h2>MOS per configuration</h2>"
        + _table(data["configs"], instrument=False)
        + "<h2>MOS per configuration and instrument</h2>"
        + _table(data["instruments"], instrument=True)
        + "<h2>The paper's MOS (Kim et al. 2019, ± standard error)</h2>"
        "<table class='mos'><thead><tr><th>condition</th><th>our configuration</th>"
        f"<th>MOS ± SE</th></tr></thead><tbody>{paper}</tbody></table>"
        f"<p><a class='button' href='/api/results/summary.csv{query}'>summary.csv</a> "
        f"<a class='button' href='/api/results/ratings.csv{query}'>ratings.csv</a></p>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Results: {html.escape(title)}</title>"
        "<link rel='stylesheet' href='/static/style.css'>"
        "<link rel='stylesheet' href='/static/listen.css'></head><body class='results'>"
        f"<header><h1>Listening test results</h1><p>{html.escape(title)}</p></header>"
        f"<main><section class='panel' id='results'>{body}</section></main></body></html>"
    )
