"""The 3-D timbre space: t-SNE positions, colours, the JSON for the web app, the CLI, the
shipped 100-instrument model and its exported space."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import requires_fluidsynth

from mel2mel import pretrained
from mel2mel.cli import main
from mel2mel.data.instrument_sets import space100_spec
from mel2mel.models.acoustic import Instrument, Mel2Mel
from mel2mel.models.config import AcousticConfig
from mel2mel.models.export import load_acoustic, save_pretrained
from mel2mel.timbre import space3d as S

pytestmark = pytest.mark.usefixtures("single_thread")

KEYS = {"name", "soundfont", "program", "index", "embedding", "position", "centroid_hz"}
KEYS |= {"energy_db", "color_centroid", "color_energy", "family"}
SHIPPED = pretrained.path(pretrained.ACOUSTIC100)
SHIPPED_JSON = pretrained.path(pretrained.SPACE100)


def tiny_model(n: int = 5, dim: int = 10) -> Mel2Mel:
    """A debug-size model whose instruments carry space100 names (so they have SoundFonts)."""
    torch.manual_seed(0)
    names = [Instrument(name, program) for name, program, _ in space100_spec()[:n]]
    model = Mel2Mel(AcousticConfig.preset("debug", n_instruments=n, embedding_dim=dim), names)
    with torch.no_grad():  # FiLM starts as the identity: give instruments distinct sounds
        for film in (model.film_in, model.film_out):
            for layer in (film.gamma, film.beta):
                layer.weight.normal_(0.0, 0.3)
    return model.eval()


def check_document(doc: dict, n: int, dim: int) -> None:
    assert doc["format"] == 1 and doc["embedding_dim"] == dim
    assert 0 < doc["tsne"]["perplexity"] < n
    insts = doc["instruments"]
    assert [i["index"] for i in insts] == list(range(n))
    for inst in insts:
        assert set(inst) == KEYS
        assert len(inst["embedding"]) == dim and len(inst["position"]) == 3
        assert np.linalg.norm(inst["position"]) <= 1.0 + 1e-4
        assert re.fullmatch(r"#[0-9a-f]{6}", inst["color_centroid"])
        assert re.fullmatch(r"#[0-9a-f]{6}", inst["color_energy"])
        assert 0 < inst["centroid_hz"] < 8000 and np.isfinite(inst["energy_db"])
    assert max(np.linalg.norm(i["position"]) for i in insts) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("n", [2, 5])
def test_space3d_document_of_a_tiny_model(n):
    model = tiny_model(n)
    doc = S.space3d(model, name="tiny")
    check_document(doc, n, 10)
    first = doc["instruments"][0]
    assert first["name"] == "Grand Piano (MuseScore)" and first["program"] == 0
    assert first["soundfont"] == "MuseScore_General.sf3"
    emb = model.embedding.weight.detach().numpy()
    assert np.allclose([i["embedding"] for i in doc["instruments"]], emb, atol=1e-5)
    assert S.space3d(model, name="tiny") == doc  # fixed random_state: reproducible


def test_statistics_follow_the_mel():
    model = tiny_model(3)
    with torch.no_grad():
        model.embedding.weight.zero_()  # every instrument the same ...
        model.embedding.weight[2, 0] = 1.0  # ... but the last
        model.film_out.beta.weight.zero_()
        model.film_out.beta.weight[:, 0] = 1.0  # louder everywhere
    centroid, energy, frames = S.instrument_statistics(model)
    assert frames > 400
    assert centroid[0] == pytest.approx(centroid[1]) and energy[0] == pytest.approx(energy[1])
    assert energy[2] > energy[0]
    assert S.hex_colors(np.array([1.0, 1.0]), "viridis")[0] == S.hex_colors([2.0], "viridis")[0]


def test_cli_writes_json_and_png(tmp_path, capsys):
    save_pretrained(tiny_model(4), tmp_path / "m4")
    out = tmp_path / "out" / "space"
    args = ["plot", "space3d", "--model", str(tmp_path / "m4"), "-o", str(out)]
    assert main(args) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    check_document(doc, 4, 10)
    assert doc["model"] == "m4"
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert main(args) == 2 and "exists; pass -f" in capsys.readouterr().err
    other = tmp_path / "web.json"
    assert main([*args, "-f", "--json", str(other)]) == 0 and other.is_file()
    assert [i["family"] for i in doc["instruments"]] == [
        "Piano",
        "Piano",
        "Piano",
        "Chromatic Percussion",
    ]


@requires_fluidsynth
def test_cli_writes_each_dots_model_and_soundfont_clips(tmp_path, monkeypatch):
    import soundfile as sf

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    save_pretrained(tiny_model(2), tmp_path / "m2")
    out = tmp_path / "out" / "space"
    assert (
        main(["plot", "space3d", "--model", str(tmp_path / "m2"), "-o", str(out), "--samples"]) == 0
    )
    doc = json.loads(out.with_suffix(".json").read_text())
    for inst in doc["instruments"]:
        model_clip, real_clip = (out.parent / inst[f"sample_{k}"] for k in ("model", "soundfont"))
        a, sr = sf.read(model_clip)
        b, _ = sf.read(real_clip)
        assert sr == 48000 or sr == 16000  # Opus decodes at its own rate
        assert len(a) == len(b) and len(a) > 3.5 * sr
        assert max(np.abs(a).max(), np.abs(b).max()) == pytest.approx(0.5, abs=0.08)  # -6 dBFS
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2  # the SoundFont renders, cached


@pytest.mark.skipif(not SHIPPED.with_suffix(".json").is_file(), reason="no shipped model")
def test_shipped_100_instrument_model_and_space():
    model = load_acoustic(SHIPPED)
    assert model.config.n_instruments == 100 and model.embedding_dim == 10
    assert [i.name for i in model.instruments] == [n for n, _, _ in space100_spec()]
    roll = torch.zeros(1, 176, 200)
    roll[0, 39:41, 20:150] = 0.8  # C4 and C#4
    roll[0, 88 + 39 : 88 + 41, 20] = 0.8
    k = model.instrument_index("Trumpet (MuseScore)")
    mel = model(roll, instrument=k)
    assert mel.shape == (1, 80, 200) and torch.isfinite(mel).all()
    assert mel[0, :, 60:120].mean() > mel[0, :, 180:].mean() + 1.0  # the notes sound
    doc = json.loads(SHIPPED_JSON.read_text())
    check_document(doc, 100, 10)
    emb = model.embedding.weight.detach().numpy()
    assert np.allclose([i["embedding"] for i in doc["instruments"]], emb, atol=1e-5)
    assert {i["soundfont"] for i in doc["instruments"]} == {
        "MuseScore_General.sf3",
        "FluidR3_GM.sf2",
        "TimGM6mb.sf2",
    }
    size = sum(p.stat().st_size for p in (SHIPPED.with_suffix(".safetensors"), SHIPPED_JSON))
    assert size < 15e6
