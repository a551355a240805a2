"""MOS, t confidence intervals, attention flags and the exports, against hand-computed values."""

from __future__ import annotations

import csv
import io
import math

import pytest

from mel2mel.listening.report import format_summary, ratings_csv, summary_csv, summary_dict
from mel2mel.listening.stats import PAPER_MOS, flag_listeners, mos, summarize, t_quantile

from .conftest import rating

# Student's t 0.975 quantiles as printed in statistical tables (6 decimals)
T_TABLE = {
    1: 12.706205,
    2: 4.302653,
    4: 2.776445,
    9: 2.262157,
    30: 2.042272,
    100: 1.983972,
    101: 1.983731,
    1000: 1.962339,
}


@pytest.mark.parametrize(("df", "expected"), sorted(T_TABLE.items()))
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


def test_mos_and_its_interval_by_hand():
    m = mos([4, 5, 3, 4, 4])  # mean 4, sd sqrt(2/4), t(0.975, 4) = 2.776445
    assert (m.n, m.mean) == (5, 4.0)
    assert m.sd == pytest.approx(math.sqrt(0.5), rel=1e-12)
    assert m.half_width == pytest.approx(2.776445 * math.sqrt(0.5) / math.sqrt(5), rel=1e-6)
    assert (m.lo, m.hi) == pytest.approx((4 - 0.877989, 4 + 0.877989), abs=1e-6)
    one = mos([3])
    assert one.mean == 3 and math.isnan(one.half_width)
    assert math.isnan(mos([]).mean)


def _ratings():
    """Listeners 1 and 2 attentive, 3 rates the reference low, 4 the anchor high."""
    rows = [
        rating(1, "original", 5),
        rating(1, "original", 4),
        rating(1, "anchor", 1),
        rating(1, "mulaw8", 4),
        rating(1, "mulaw8", 3, instrument="Grand Piano"),
        rating(1, "mulaw8", 1, phase="training"),  # training: never counted
        rating(2, "original", 4),
        rating(2, "anchor", 2),
        rating(2, "mulaw8", 5),
        rating(3, "original", 3),
        rating(3, "original", 4),
        rating(3, "mulaw8", 1),
        rating(4, "original", 5),
        rating(4, "anchor", 3),
        rating(4, "mulaw8", 2),
    ]
    return rows


def test_flags_listeners_who_fail_the_attention_checks():
    flagged = flag_listeners(_ratings())
    assert set(flagged) == {3, 4}
    assert "reference rated 3.50 < 4" in flagged[3] and "anchor rated 3.00 > 2" in flagged[4]
    # training ratings do not count: a low reference in training flags nobody
    assert flag_listeners([rating(5, "original", 1, phase="training")]) == {}


def test_summary_leaves_out_flagged_listeners_and_training():
    s = summarize(_ratings(), labels={"mulaw8": "8-bit mu-law"})
    by = {r.config: r for r in s.configs}
    assert [r.config for r in s.configs] == ["original", "mulaw8", "anchor"]  # best first
    assert by["mulaw8"].mos.mean == pytest.approx(4.0)  # 4, 3, 5 (not the training 1)
    assert by["mulaw8"].mos.n == 3 and by["mulaw8"].listeners == 2
    assert by["mulaw8"].label == "8-bit mu-law" and by["original"].label == "original"
    assert by["original"].mos.mean == pytest.approx(13 / 3)
    assert by["mulaw8"].paper == PAPER_MOS["mulaw8"] and by["anchor"].paper is None
    assert (s.listeners, s.ratings) == (2, 8)
    inst = {(r.config, r.instrument): r.mos for r in s.instruments}
    assert inst["mulaw8", "Trumpet"].mean == pytest.approx(4.5)
    assert inst["mulaw8", "Grand Piano"].n == 1
    everyone = summarize(_ratings(), include_flagged=True)
    assert {r.config: r.mos.mean for r in everyone.configs}["mulaw8"] == pytest.approx(
        15 / 5
    )  # 4, 3, 5, 1, 2
    assert everyone.listeners == 4


def test_the_paper_table_is_the_papers():
    assert {k: v.mos for k, v in PAPER_MOS.items()} == {
        "original": 4.316,
        "mulaw8": 3.879,
        "wavenet-true": 3.378,
        "model-tanh-log-abs": 3.183,
        "model-log-abs": 3.011,
        "model-abs": 2.757,
    }


def test_exports():
    rows = _ratings()
    s = summarize(rows)
    raw = list(csv.DictReader(io.StringIO(ratings_csv(rows, s.flagged))))
    assert len(raw) == len(rows)
    assert [r["flagged"] for r in raw].count("1") == 6 and raw[5]["phase"] == "training"
    assert raw[0]["time"].startswith("1970-01-01T00:00:00") and raw[0]["attention"] == "1"
    summary = list(csv.DictReader(io.StringIO(summary_csv(s))))
    mu = next(r for r in summary if r["config"] == "mulaw8" and not r["instrument"])
    assert float(mu["mos"]) == 4.0 and float(mu["paper_mos"]) == 3.879
    half = 4.302653 * 1.0 / math.sqrt(3)  # sd of 4, 3, 5 is 1
    assert float(mu["ci95_half_width"]) == pytest.approx(half, abs=1e-3)
    text = format_summary(s)
    assert "2 listener(s), 8 test ratings; 2 listener(s) failed" in text
    assert f"4.00 +/- {half:.2f}" in text and "3.879 +/- 0.051" in text
    assert "WaveNet on ground-truth mel" in text  # the paper's rows we have no column for
    assert summary_dict(s)["configs"][1]["config"] == "mulaw8"
