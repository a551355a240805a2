"""Evaluation: per-bin Pearson correlation, dB error, tables and plots on whole test pieces."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from mel2mel.cli import main
from mel2mel.constants import LOG_SILENCE
from mel2mel.data.dataset import load_item
from mel2mel.errors import UserError
from mel2mel.evaluation.acoustic import (
    BinStats,
    evaluate_acoustic,
    frame_groups,
    load_model,
    write_report,
)
from mel2mel.models import AcousticConfig, Instrument, Mel2Mel, save_pretrained

pytestmark = pytest.mark.usefixtures("single_thread")


def test_bin_stats_match_numpy():
    rng = np.random.default_rng(0)
    stats = BinStats(n_bins=3)
    xs, ys = [], []
    for t in (40, 25):
        x = rng.normal(size=(3, t))
        y = 0.7 * x + rng.normal(size=(3, t))
        y[2] = -x[2]
        stats.update(x, y)
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs, 1), np.concatenate(ys, 1)
    r = stats.correlation()
    for b in range(3):
        assert r[b] == pytest.approx(np.corrcoef(x[b], y[b])[0, 1], abs=1e-9)
    assert r[2] == pytest.approx(-1.0)
    assert stats.n == 65 and stats.items == 2
    assert stats.mae_db() == pytest.approx(np.abs(x - y).mean() * 20 / math.log(10))


def test_bin_stats_constant_bin_is_nan_and_db_conversion():
    stats = BinStats(n_bins=2)
    true = np.array([[0.0, 1.0, 2.0], [-11.5, -11.5, -11.5]])
    stats.update(true + 1.0, true)  # a magnitude ratio of e everywhere
    r = stats.correlation()
    assert r[0] == pytest.approx(1.0) and np.isnan(r[1])
    assert stats.mae_db() == pytest.approx(20 * math.log10(math.e))  # 8.686 dB


def test_sounding_correlation_leaves_out_bins_silent_in_most_frames():
    rng = np.random.default_rng(1)
    x = rng.normal(-4.0, 1.0, size=(3, 60))
    y = x + rng.normal(0.0, 0.5, size=(3, 60))
    y[1, :40] = LOG_SILENCE  # silent in 2/3 of the frames: a few frames decide its r
    y[2, :25] = LOG_SILENCE + 0.4  # within the margin of the floor in 25 of 60: still kept
    stats = BinStats(n_bins=3)
    stats.update(x[:, :30], y[:, :30])
    stats.update(x[:, 30:], y[:, 30:])
    assert stats.sounding.tolist() == [60, 20, 35]
    assert stats.sounding_bins().tolist() == [True, False, True]
    r = stats.correlation()
    mean, bins = stats.sounding_correlation()
    assert bins == 2 and mean == pytest.approx((r[0] + r[2]) / 2, abs=1e-6)
    assert mean > np.mean(r)  # the silent bin was the poorly correlated one
    assert stats.sounding_bins(share=0.3).all()
    first, second = BinStats(n_bins=3), BinStats(n_bins=3)  # the same frames, added up later
    first.update(x[:, :30], y[:, :30])
    second.update(x[:, 30:], y[:, 30:])
    first.add(second)
    assert (first.n, first.items) == (stats.n, stats.items) == (60, 2)
    np.testing.assert_array_equal(first.sounding, stats.sounding)
    np.testing.assert_allclose(first.sums, stats.sums)


def model_for(dataset_instruments: int = 2, embedding_dim: int = 2) -> Mel2Mel:
    torch.manual_seed(0)
    cfg = AcousticConfig.preset(
        "debug", n_instruments=dataset_instruments, embedding_dim=embedding_dim
    )
    names = [Instrument(f"Synth {k}", 80 + k) for k in range(dataset_instruments)]
    model = Mel2Mel(cfg, names).eval()
    with torch.no_grad():  # FiLM starts as the identity: randomize it so instruments differ
        for p in (*model.film_in.parameters(), *model.film_out.parameters()):
            p.normal_(0, 0.5)
    return model


def test_evaluate_writes_tables_and_plots(synthetic_dataset, tmp_path):
    model = model_for()
    report = evaluate_acoustic(model, synthetic_dataset, progress=False)
    assert report["split"] == "test"
    assert [p["name"] for p in report["instruments"]] == ["Synth 0", "Synth 1"]
    for k, p in enumerate(report["instruments"]):
        assert p["items"] == 1 and p["frames"] == 300  # one whole test piece each, not crops
        # recomputed here: the model's forward on the whole test piece against its mel
        item = load_item(synthetic_dataset, f"piece5/synth_{k}")
        with torch.no_grad():
            pred = model(torch.from_numpy(item["roll"])[None], instrument=k)[0].numpy()
        true, db = item["mel"], 20 / math.log(10)
        assert p["mae_db"] == pytest.approx(np.abs(pred - true).mean() * db, rel=1e-4)
        r = [np.corrcoef(pred[b], true[b])[0, 1] for b in range(80)]
        np.testing.assert_allclose(
            [np.nan if v is None else v for v in p["correlation"]], r, atol=1e-4
        )
        groups = frame_groups(item["roll"], true.shape[1])  # tested below
        notes = groups["pp"] | groups["mf"] | groups["ff"]  # the frames where a note sounds
        pred, true = pred[:, notes], true[:, notes]
        sounding = (true > LOG_SILENCE + 0.5).mean(1) >= 0.5  # sound in half the frames or more
        assert p["sounding_bins"] == sounding.sum() > 0 and 0 < notes.sum() < notes.size
        r = [np.corrcoef(pred[b], true[b])[0, 1] for b in range(80)]
        r_sounding = np.nanmean(np.array(r)[sounding])
        assert p["sounding_correlation"] == pytest.approx(r_sounding, abs=1e-4)
    assert len(report["mel_frequencies_hz"]) == 80
    assert report["mel_frequencies_hz"][0] < report["mel_frequencies_hz"][-1] < 8000
    paths = write_report(report, tmp_path / "eval", model)
    names = {p.name for p in paths}
    assert names == {
        "metrics.json",
        "metrics.csv",
        "correlation.csv",
        "groups.csv",
        "correlation.png",
        "embedding.png",
    }
    for png in ("correlation.png", "embedding.png"):
        assert (tmp_path / "eval" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.reader((tmp_path / "eval" / "metrics.csv").open()))
    assert rows[0][:2] == ["instrument", "program"] and rows[-1][0] == "ALL"
    assert rows[0][-2:] == ["sounding_correlation", "sounding_bins"]
    assert {len(row) for row in rows} == {8}
    table = list(csv.reader((tmp_path / "eval" / "correlation.csv").open()))
    assert len(table) == 3 and len(table[1]) == 81
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["overall"]["mae_db"] > 0


def test_no_embedding_plot_unless_2d(synthetic_dataset, tmp_path):
    model = model_for(embedding_dim=3)
    report = evaluate_acoustic(model, synthetic_dataset, progress=False)
    names = {p.name for p in write_report(report, tmp_path / "eval", model)}
    assert "embedding.png" not in names and "correlation.png" in names


def test_cli_evaluate(synthetic_dataset, tmp_path, capsys):
    save_pretrained(model_for(), tmp_path / "model")
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "acoustic",
        "--model",
        str(tmp_path / "model"),
        "--data",
        str(synthetic_dataset),
        "--output",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Synth 1" in printed and "ALL" in printed
    assert (out / "embedding.png").is_file()
    assert main(args) == 2  # refuses to overwrite
    assert main([*args, "-f"]) == 0
    with pytest.raises(Exception, match="no acoustic model"):
        load_model(tmp_path / "nothing")


def test_real_data_training_improves_the_evaluation(real_dataset, tmp_path):
    from mel2mel.data.dataset import read_manifest
    from mel2mel.train.acoustic_loop import train_acoustic
    from mel2mel.train.config import RunConfig, TrainConfig

    config = RunConfig(
        AcousticConfig.preset("debug"),
        TrainConfig(
            steps=40,
            batch_size=4,
            crop_frames=128,
            crops_per_item=4,
            lr=0.01,
            warmup_steps=2,
            num_workers=0,
            log_every=10,
            valid_every=0,
            checkpoint_every=40,
        ),
    )
    torch.manual_seed(0)
    untrained = Mel2Mel(
        AcousticConfig.preset("debug", n_instruments=2),
        [Instrument("Grand Piano", 0), Instrument("Trumpet", 56)],
    ).eval()
    before = evaluate_acoustic(untrained, real_dataset, progress=False)
    trained = train_acoustic(real_dataset, tmp_path / "run", config, progress=False).model
    after = evaluate_acoustic(trained, real_dataset, progress=False)
    test_items = [it for it in read_manifest(real_dataset)["items"] if it["split"] == "test"]
    assert after["frames"] == sum(it["frames"] for it in test_items)  # whole pieces
    assert {p["name"] for p in after["instruments"]} == {"Grand Piano", "Trumpet"}
    assert after["overall"]["mae_db"] < 0.85 * before["overall"]["mae_db"]
    assert -1 <= after["overall"]["mean_correlation"] <= 1


def test_frames_are_grouped_by_velocity_band_and_register():
    from mel2mel.midi import Note, piano_roll

    notes = [
        Note(30, 0.0, 0.4, 20, 0, 0),  # pp, low
        Note(60, 0.5, 0.9, 64, 0, 0),  # mf, middle
        Note(62, 0.5, 0.9, 100, 0, 0),  # ff wins: the loudest sounding note
        Note(90, 1.0, 1.4, 127, 0, 0),  # ff, high
    ]
    g = frame_groups(piano_roll(notes, 200), 250)  # frames past the roll: no group
    frames = {name: set(np.flatnonzero(mask)) for name, mask in g.items()}
    assert frames["pp"] == set(range(0, 50)) == frames["low (A0-B2)"]
    assert frames["ff"] == set(range(63, 113)) | set(range(125, 175))
    assert frames["mf"] == set()
    assert frames["middle (C3-B4)"] == set(range(63, 113))
    assert frames["high (C5-C8)"] == set(range(125, 175))


def test_evaluate_reports_groups_and_piece_sets(synthetic_dataset):
    from mel2mel.data.dataset import load_item, read_manifest

    report = evaluate_acoustic(model_for(), synthetic_dataset, progress=False)
    assert report["pieces"] == "all"
    expected: dict[str, int] = {}
    for it in read_manifest(synthetic_dataset)["items"]:
        if it["split"] == "test":
            item = load_item(synthetic_dataset, it["id"])
            for name, mask in frame_groups(item["roll"], item["mel"].shape[1]).items():
                expected[name] = expected.get(name, 0) + int(mask.sum())
    got = {name: g["frames"] for name, g in report["groups"].items()}
    assert got == {name: n for name, n in expected.items() if n} and got
    for g in report["groups"].values():
        assert g["instruments"] == 2 and g["mae_db"] > 0
        assert 0 <= g["sounding_bins"] <= 80
        if g["sounding_correlation"] is not None:
            assert -1 <= g["sounding_correlation_min"] <= g["sounding_correlation"] <= 1
    with pytest.raises(UserError, match="no performed items"):
        evaluate_acoustic(model_for(), synthetic_dataset, pieces="performed", progress=False)
    with pytest.raises(UserError, match="no solo items"):  # one kind of piece
        evaluate_acoustic(model_for(), synthetic_dataset, pieces="solo", progress=False)
    with pytest.raises(UserError, match="pieces must be one of all, plain, performed, excerpt"):
        evaluate_acoustic(model_for(), synthetic_dataset, pieces="chorales", progress=False)
