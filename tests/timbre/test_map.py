"""Timbre maps: the batched sweep, centroid/energy, Spearman directions, JSON, plots, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import mild_heights

from mel2mel import constants as C
from mel2mel.audio import mel_band_frequencies
from mel2mel.cli import main
from mel2mel.errors import UserError
from mel2mel.models import AcousticConfig, Instrument, Mel2Mel, save_pretrained
from mel2mel.timbre.map import (
    TimbreMap,
    best_direction,
    compute_timbre_map,
    passage_roll,
    plot_timbre_map,
    preview_mel,
    reference_passage,
    spearman_rho,
)
from mel2mel.timbre.sweep import EmbeddingSweep, mel_statistics

pytestmark = pytest.mark.usefixtures("single_thread")

INSTRUMENTS = [Instrument("Grand Piano", 0), Instrument("Trumpet", 56), Instrument("Organ", 19)]


def tiny_model(**overrides: object) -> Mel2Mel:
    torch.manual_seed(0)
    config = AcousticConfig.preset("debug", n_instruments=3, **overrides)
    model = Mel2Mel(config, INSTRUMENTS[:3])
    with torch.no_grad():  # make the embedding matter
        for p in (*model.film_in.parameters(), *model.film_out.parameters()):
            p.normal_(0, 0.5)
        for part in (model.harmonic, model.head):
            for p in part.parameters() if part is not None else ():
                p.normal_(0, 0.5)
        mild_heights(model)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> Mel2Mel:
    return tiny_model()


@pytest.fixture(scope="module")
def tmap(model) -> TimbreMap:
    return compute_timbre_map(model, resolution=7, preview_resolution=3, progress=False)


def test_reference_passage_is_fixed_and_polyphonic():
    a, b = reference_passage(), reference_passage()
    assert a.notes == b.notes
    roll = passage_roll(a)
    assert roll.shape == (C.ROLL_CHANNELS, 499)  # 4 s with the tail
    assert (roll[: C.N_KEYS] > 0).sum(0).max() >= 4  # chords under the melody
    assert min(n.pitch for n in a.notes) >= 41 and max(n.pitch for n in a.notes) <= 79


@pytest.mark.parametrize(
    ("layers", "coding", "harmonic", "head", "gate", "heights"),
    [(1, "linear", False, 0, False, False), (2, "linear", False, 0, False, False),
     (1, "log", False, 0, False, False), (1, "linear+log", False, 0, False, False),
     (1, "linear+log", True, 0, False, False), (2, "linear", True, 0, False, False),
     (1, "linear+log", True, 12, False, False), (1, "linear+log", True, 12, True, False),
     (1, "linear+log", True, 12, True, True), (2, "linear", True, 0, False, True)],
)  # fmt: skip
def test_sweep_equals_the_model_forward(layers, coding, harmonic, head, gate, heights):
    model = tiny_model(
        lstm_layers=layers,
        velocity_coding=coding,
        harmonic_detail=harmonic,
        head_channels=head,
        detail_gate=gate,
        harmonic_heights=heights,
    )
    rng = np.random.default_rng(0)
    notes = rng.random((2, C.ROLL_CHANNELS, 60)) > 0.9
    velocities = rng.integers(1, 128, notes.shape) / 127.0
    rolls = torch.from_numpy((notes * velocities).astype(np.float32))
    points = torch.randn(3, 2)
    with torch.inference_mode():
        got = EmbeddingSweep(model, rolls)(points)
        want = model(rolls.repeat(3, 1, 1), embedding=points.repeat_interleave(2, 0))
    assert got.shape == (3, 2, C.N_MELS, 60)
    torch.testing.assert_close(got, want.view(3, 2, C.N_MELS, 60), atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        sub = EmbeddingSweep(model, rolls).subset([1])(points)
    torch.testing.assert_close(sub[:, 0], got[:, 1], atol=1e-5, rtol=1e-5)


def test_sweep_is_differentiable(model):
    rolls = torch.from_numpy(passage_roll(reference_passage())[None, :, :80])
    points = torch.zeros(2, 2, requires_grad=True)
    EmbeddingSweep(model, rolls)(points).mean().backward()
    assert points.grad is not None and points.grad.abs().sum() > 0


def test_centroid_and_energy_of_synthetic_mels():
    freqs = mel_band_frequencies()
    assert freqs.shape == (C.N_MELS,) and np.all(np.diff(freqs) > 0)
    mel = torch.full((3, C.N_MELS, 10), C.LOG_SILENCE)
    mel[0, 20], mel[1, 40] = 0.0, 0.0  # magnitude 1 in one band
    mel[2, 20], mel[2, 40] = 0.0, 0.0
    active = torch.ones(10, dtype=torch.bool)
    active[7:] = False
    mel[:, :, 7:] = 5.0  # inactive frames are ignored
    centroid, energy = mel_statistics(mel, active)
    assert centroid[0] == pytest.approx(freqs[20], rel=5e-3)  # the silent bands weigh 1e-5
    assert centroid[1] == pytest.approx(freqs[40], rel=5e-3)
    assert centroid[0] < centroid[2] < centroid[1]
    assert energy[0] == pytest.approx(0.0, abs=1e-3)  # 10 log10(1)
    assert energy[2] == pytest.approx(10 * math.log10(2), abs=1e-3)
    louder, _ = mel_statistics(mel + 1.0, active)  # a gain does not move the centroid
    torch.testing.assert_close(louder, centroid)


def test_spearman_on_a_constructed_field():
    xs, ys = np.linspace(-1, 1, 21), np.linspace(-2, 1, 17)
    gx, gy = np.meshgrid(xs, ys)
    t = math.radians(30.0)
    rho, angle = best_direction(xs, ys, np.exp(gx * math.cos(t) + gy * math.sin(t)))
    assert rho == pytest.approx(1.0) and angle == pytest.approx(30.0)
    rho, angle = best_direction(xs, ys, -gx + 0.01 * gy)  # grows towards -x
    assert rho > 0.99 and abs(angle - 180.0) < 2.0
    assert spearman_rho(np.array([1, 2, 2, 3]), np.array([1, 2, 2, 3])) == pytest.approx(1.0)
    assert spearman_rho(np.arange(5), -(np.arange(5.0) ** 3)) == pytest.approx(-1.0)


def test_map_shapes_and_bounds(tmap, model):
    table = model.embedding.weight.detach().numpy()
    assert tmap.xs.shape == tmap.ys.shape == (7,)
    assert tmap.centroid_hz.shape == tmap.energy_db.shape == (7, 7)
    assert np.all(np.isfinite(tmap.centroid_hz)) and np.all(tmap.centroid_hz > 0)
    assert tmap.xs[0] < table[:, 0].min() and tmap.xs[-1] > table[:, 0].max()
    assert tmap.ys[0] < table[:, 1].min() and tmap.ys[-1] > table[:, 1].max()
    assert tmap.preview_mels.shape == (3, 3, C.N_MELS, 499)
    assert tmap.preview_mels.dtype == np.float16
    assert [i["name"] for i in tmap.instruments] == ["Grand Piano", "Trumpet", "Organ"]
    assert tmap.model.startswith("sha256:")
    s = tmap.spearman()
    assert set(s) == {"method", "centroid", "energy"}
    assert 0 <= s["centroid"]["rho"] <= 1 and 0 <= s["centroid"]["angle_deg"] < 360
    ix, iy = tmap.inside_box()  # the 25 % margin leaves the 1-2 outer columns/rows out
    assert 3 <= len(ix) <= 5 and 3 <= len(iy) <= 5
    assert tmap.xs[ix[0]] >= table[:, 0].min() and tmap.xs[ix[-1]] <= table[:, 0].max()
    assert 0 <= s["energy"]["inside_rho"] <= 1


def test_preview_mel_matches_the_map_and_the_model(tmap, model):
    point = (tmap.preview_xs[2], tmap.preview_ys[0])
    mel = preview_mel(model, point)
    assert mel.shape == (C.N_MELS, 499) and mel.dtype == np.float32
    np.testing.assert_allclose(tmap.preview_mels[0, 2], mel, atol=0.02)  # float16
    roll = torch.from_numpy(passage_roll(reference_passage()))[None]
    with torch.inference_mode():
        want = model(roll, embedding=torch.tensor([point], dtype=torch.float32))[0]
    np.testing.assert_allclose(mel, want.numpy(), atol=1e-5)
    with pytest.raises(UserError, match="2 finite"):
        preview_mel(model, (0.0, 1.0, 2.0))


def test_json_round_trip(tmap, tmp_path):
    path = tmp_path / "map.json"
    tmap.save_json(path)
    data = json.loads(path.read_text())
    assert data["kind"] == "mel2mel-timbre-map" and data["preview_mels"]["dtype"] == "uint8"
    assert len(data["centroid_hz"]) == 7 and len(data["mel_frequencies_hz"]) == C.N_MELS
    back = TimbreMap.load_json(path)
    np.testing.assert_allclose(back.centroid_hz, tmap.centroid_hz, atol=0.01)
    np.testing.assert_allclose(back.energy_db, tmap.energy_db, atol=1e-3)
    np.testing.assert_array_equal(back.xs, tmap.xs)
    assert back.instruments == tmap.instruments and back.model == tmap.model
    step = data["preview_mels"]["scale"]
    diff = np.abs(back.preview_mels.astype(np.float32) - tmap.preview_mels.astype(np.float32))
    assert diff.max() <= step / 2 + 0.01  # quantization + float16
    with pytest.raises(UserError, match="timbre map"):
        TimbreMap.from_json_dict({"kind": "something else"})


def test_plots_by_suffix(tmap, tmp_path):
    png = plot_timbre_map(tmap, tmp_path / "c.png", "centroid", {"mine": (0.1, 0.2)})
    svg = plot_timbre_map(tmap, tmp_path / "e.svg", "energy")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in svg.read_bytes()[:400]
    with pytest.raises(UserError, match="colour"):
        plot_timbre_map(tmap, tmp_path / "x.png", "loudness")
    with pytest.raises(UserError, match="written as"):
        plot_timbre_map(tmap, tmp_path / "x.jpg")


def test_needs_a_2d_embedding():
    model = Mel2Mel(AcousticConfig.preset("debug", n_instruments=2, embedding_dim=3))
    with pytest.raises(UserError, match="2-D embedding"):
        compute_timbre_map(model, resolution=3, progress=False)


def test_cli_writes_figures_and_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEL2MEL_HOME", str(tmp_path / "home"))
    folder = tmp_path / "model"
    save_pretrained(tiny_model(), folder)
    prefix = tmp_path / "space"
    args = ["plot", "timbre-space", "--model", str(folder), "--resolution", "5",
            "-o", str(prefix), "--json", str(tmp_path / "map.json")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    names = ["space-centroid.png", "space-centroid.svg", "space-energy.png", "space-energy.svg"]
    for name in [*names, "map.json"]:
        assert (tmp_path / name).stat().st_size > 0, name
    assert "centroid: Spearman rho" in out and "energy: Spearman rho" in out
    assert main(args) == 2  # no silent overwrite
    assert "exists; pass -f" in capsys.readouterr().err
    assert main([*args, "-f", "--color", "energy", "--format", "png"]) == 0
    assert TimbreMap.load_json(tmp_path / "map.json").centroid_hz.shape == (5, 5)
