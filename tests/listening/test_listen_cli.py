"""``mel2mel listen results``: the MOS table with its intervals, and the CSV exports."""

from __future__ import annotations

import csv
import math

from mel2mel.cli import main
from mel2mel.listening.design import plan_session, seed_of
from mel2mel.listening.site import load_site
from mel2mel.listening.store import RatingStore

SCORES = {"original": 5, "mulaw8": 4, "model-log-abs": 3, "model-abs": 2, "anchor": 1}


def _fill(db, site_dir, listeners: int = 3, careless: bool = False) -> list[int]:
    """Listeners who rate each configuration by :data:`SCORES`, minus one per listener for
    the systems on the Trumpet; a careless one gives everything 3. Returns the test scores of
    mulaw8 by attentive listeners."""
    site = load_site(site_dir)
    mulaw = []
    with RatingStore(db) as store:
        for n in range(listeners + careless):
            token = f"listener-{n}"  # fixed: the same sessions every run
            me = store.add_listener(
                token, plan_session(site, seed_of(token), trials=10), session="s"
            )
            for t in store.session(me):
                score = SCORES[t.trial.key.config]
                if t.trial.role == "system" and t.trial.key.instrument == "Trumpet":
                    score -= 1
                score = 3 if n == listeners else score
                store.rate(me, t.clip_id, score)
                if t.trial.phase == "test" and t.trial.key.config == "mulaw8" and n < listeners:
                    mulaw.append(score)
    return mulaw


def test_results_prints_the_table_and_writes_csv(tmp_path, site_dir, capsys):
    db = tmp_path / "r.sqlite"
    mulaw = _fill(db, site_dir, careless=True)
    out = tmp_path / "out"
    assert main(["listen", "results", str(db), "-o", str(out), "--site", str(site_dir)]) == 0
    text = capsys.readouterr().out
    n = len(mulaw)
    mean = sum(mulaw) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in mulaw) / (n - 1))
    assert n == 6 and sd > 0  # 2 per listener, Trumpet and Grand Piano mixed
    line = next(x for x in text.splitlines() if x.startswith("mulaw8 "))
    assert f"{mean:4.2f} +/- " in line and "3.879 +/- 0.051" in line and "8-bit mu-law" in line
    assert "1 listener(s) failed the attention checks (excluded)" in text
    assert "MOS per configuration and instrument" in text
    rows = list(csv.DictReader((out / "summary.csv").open()))
    mu = next(r for r in rows if r["config"] == "mulaw8" and r["instrument"] == "")
    assert float(mu["mos"]) == round(mean, 3) and int(mu["ratings"]) == n
    assert float(mu["sd"]) == round(sd, 3) and mu["listeners"] == "3"
    raw = list(csv.DictReader((out / "ratings.csv").open()))
    assert len(raw) == 4 * 14 and {r["flagged"] for r in raw if r["listener"] == "4"} == {"1"}
    # no silent overwrite; -f overwrites; --include-flagged counts the careless listener
    assert main(["listen", "results", str(db), "-o", str(out)]) == 2
    assert "exists; pass -f" in capsys.readouterr().err
    assert main(["listen", "results", str(db), "-o", str(out), "-f", "--include-flagged"]) == 0
    assert "(included)" in capsys.readouterr().out


def test_results_of_a_missing_or_foreign_file(tmp_path, capsys):
    assert main(["listen", "results", str(tmp_path / "none.sqlite")]) == 2
    assert "no such database" in capsys.readouterr().err
    (tmp_path / "x.sqlite").write_text("hello")
    assert main(["listen", "results", str(tmp_path / "x.sqlite")]) == 2
    assert "error:" in capsys.readouterr().err


def test_results_of_an_empty_test(tmp_path, site_dir, capsys):
    RatingStore(tmp_path / "r.sqlite").close()
    assert main(["listen", "results", str(tmp_path / "r.sqlite")]) == 0
    assert "no test ratings yet" in capsys.readouterr().out
