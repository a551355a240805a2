"""The texture post-net: identity at start, receptive field, chunk-independent noise, export
checks, the synthesizer's texture stage, and adversarial training (resume, CLI, two ranks)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import debug_model, state_max_diff, train_two_ranks, write_midi

from mel2mel import constants as C
from mel2mel.cli import main
from mel2mel.errors import UserError
from mel2mel.midi import piano_roll, read_notes
from mel2mel.models import Mel2Mel
from mel2mel.models.export import (
    load_texture,
    save_pretrained,
    save_texture,
    texture_paths,
    weights_digest,
)
from mel2mel.models.texture import (
    CEILING,
    NOISE_BLOCK,
    InstrumentStrengths,
    TextureConfig,
    TexturePostnet,
    texture_noise,
)
from mel2mel.synthesis import streams
from mel2mel.synthesizer import Synthesizer
from mel2mel.train.checkpoint import load_checkpoint
from mel2mel.train.config import TextureRunConfig, TextureTrainConfig
from mel2mel.train.texture_loop import (
    MODULATION_BANDS,
    Discriminator,
    band_modulation,
    train_texture,
    trained_on,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def random_postnet(seed: int = 0, **overrides) -> TexturePostnet:
    """A debug post-net whose zero-initialized output layer is randomized (a trained one)."""
    torch.manual_seed(seed)
    net = TexturePostnet(TextureConfig(**{**TextureConfig.debug().to_dict(), **overrides}))
    with torch.no_grad():
        net.output.weight.normal_(0, 0.3)
        for block in net.blocks:
            block.film.gamma.weight.normal_(0, 0.5)
    return net.eval()


def mel_like(b: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 80, t, generator=g) * 5 - 6  # well above the floor


def test_fresh_postnet_is_identity_and_strength_scales():
    net = TexturePostnet(TextureConfig.debug()).eval()
    mel, emb, noise = mel_like(2, 50), torch.randn(2, 2), torch.randn(2, 2, 50)
    assert torch.equal(net(mel, emb, noise), mel)
    net = random_postnet()
    with torch.no_grad():
        full, half = net(mel, emb, noise), net(mel, emb, noise, strength=0.5)
        assert torch.equal(net(mel, emb, noise, strength=0.0), mel)
    assert (full - mel).abs().mean() > 1e-3
    free = full < mel.amax(1, keepdim=True) + CEILING  # under the ceiling (test below)
    assert free.float().mean() > 0.9
    torch.testing.assert_close((half - mel)[free], (full - mel)[free] / 2, atol=1e-5, rtol=1e-4)
    assert full.min() >= np.log(1e-5) - 1e-6  # never below the silence floor


def test_the_texture_never_lifts_a_bin_far_above_its_frame():
    # A post-net whose texture is 100 times too strong: every bin stays under its frame's
    # loudest bin of the acoustic mel plus CEILING, and what the texture lowers is untouched.
    net = random_postnet()
    mel, emb, noise = mel_like(2, 60), torch.randn(2, 2), torch.randn(2, 2, 60)
    with torch.no_grad():
        residual = net.residual(mel, emb, noise)
        out = net(mel, emb, noise, strength=100.0)
    ceiling = mel.amax(1, keepdim=True) + CEILING
    assert (mel + 100 * residual > ceiling + 1).any()  # the unbounded texture would pass it
    assert (out <= ceiling + 1e-6).all()
    kept = (mel + 100 * residual < ceiling) & (mel + 100 * residual > C.LOG_SILENCE)
    torch.testing.assert_close(out[kept], (mel + 100 * residual)[kept])


def test_receptive_field_and_per_frame_embedding():
    net = random_postnet(dilations=(1, 2, 4))
    ctx = net.context_frames
    assert ctx == TextureConfig(dilations=(1, 2, 4)).context_frames == 1 * (2 + 7)
    mel, emb, noise = mel_like(1, 120), torch.randn(1, 2), torch.randn(1, 2, 120)
    bumped = mel.clone()
    bumped[..., 60] += 3.0
    with torch.no_grad():
        diff = (net(bumped, emb, noise) - net(mel, emb, noise)).abs().amax(1)[0]
        per_frame = net(mel, emb[..., None].expand(-1, -1, 120), noise)
        other = net(mel, torch.randn(1, 2), noise)
    changed = torch.nonzero(diff > 0).flatten()
    assert changed.min() >= 60 - ctx and changed.max() <= 60 + ctx
    assert changed.min() <= 60 - ctx + 1 and changed.max() >= 60 + ctx - 1
    torch.testing.assert_close(per_frame, net(mel, emb, noise))
    assert (other - per_frame).abs().max() > 1e-3  # the embedding matters


def test_instrument_strengths_scale_the_residual_and_blend_between_instruments():
    anchors = ((0.0, 0.0), (1.0, 0.0), (0.0, 2.0))
    table = InstrumentStrengths(("a", "b", "c"), anchors, (0.2, 0.9, 0.5))
    own = table.at(torch.tensor(anchors))  # B x E -> B x 1 x 1
    assert own.shape == (3, 1, 1)
    torch.testing.assert_close(own.flatten(), torch.tensor([0.2, 0.9, 0.5]), atol=1e-6, rtol=0)
    # halfway between a and b: a mix, by symmetry pulled equally (c is as far from both)
    mid = table.at(torch.tensor([[0.5, 0.0]]))
    assert 0.2 < float(mid) < 0.9
    # a path from a to b, one embedding per frame: smooth and in order
    path = torch.stack([torch.linspace(0, 1, 21), torch.zeros(21)])[None]  # 1 x E x T
    along = table.at(path)[0, 0]
    assert along.shape == (21,) and torch.all(torch.diff(along) >= -1e-6)
    assert torch.diff(along).abs().max() < 0.15  # no jump between neighbouring frames
    far = table.at(torch.tensor([[40.0, 0.0]])).item()  # far from all: nearly their mean
    assert far == pytest.approx((0.2 + 0.9 + 0.5) / 3, abs=0.02)
    # the post-net's residual carries them: each instrument's texture at its own strength
    net = random_postnet()
    mel, noise = mel_like(3, 40), torch.randn(3, 2, 40)
    emb = torch.tensor(anchors)
    with torch.no_grad():
        plain = net.residual(mel, emb, noise)
        net.instrument_strengths = table
        scaled = net.residual(mel, emb, noise)
        half = net(mel, emb, noise, strength=0.5) - mel
    for k, s in enumerate((0.2, 0.9, 0.5)):
        torch.testing.assert_close(scaled[k], plain[k] * s, atol=1e-5, rtol=1e-4)
    free = mel + scaled < mel.amax(1, keepdim=True) + CEILING
    torch.testing.assert_close(half[free], scaled[free] / 2, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="as many"):
        InstrumentStrengths(("a",), anchors, (1.0,))
    with pytest.raises(ValueError, match=">= 0"):
        InstrumentStrengths(("a",), anchors[:1], (-1.0,))
    assert InstrumentStrengths.from_list(table.to_list()) == table


def test_noise_depends_on_frame_not_chunking():
    whole = texture_noise(7, 0, 3 * NOISE_BLOCK + 10, 3)
    assert whole.shape == (3, 3 * NOISE_BLOCK + 10)
    part = texture_noise(7, NOISE_BLOCK - 5, 2 * NOISE_BLOCK + 9, 3)
    assert torch.equal(part, whole[:, NOISE_BLOCK - 5 : 2 * NOISE_BLOCK + 9])
    assert not torch.equal(texture_noise(8, 0, 100, 3), whole[:, :100])
    assert abs(float(whole.std()) - 1.0) < 0.05


def test_config_round_trip_and_checks():
    c = TextureConfig(dilations=[1, 3])
    assert c.dilations == (1, 3) and TextureConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown"):
        TextureConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="odd"):
        TextureConfig(kernel_size=4)
    run = TextureRunConfig(model={"channels": 8})
    assert TextureRunConfig.from_dict(run.to_dict()) == run
    with pytest.raises(ValueError, match="mean_frames"):
        TextureTrainConfig(mean_frames=0)


def test_discriminator_shapes():
    d = Discriminator(3, channels=4)
    mel = mel_like(2, 64)
    logits, feats = d(mel, mel, torch.tensor([0, 2]))
    assert [tuple(x.shape) for x in logits] == [(2, 1, 10, 8), (2, 1, 32)]
    assert len(feats) == 7
    d = Discriminator(3, channels=4, notes=True)  # the notes' comb detail as a third input
    logits, _ = d(mel, mel, torch.tensor([0, 2]), mel_like(2, 64, seed=1))
    assert [tuple(x.shape) for x in logits] == [(2, 1, 10, 8), (2, 1, 32)]


def note_roll(t: int, pitches: tuple[int, ...]) -> torch.Tensor:
    roll = torch.zeros(1, C.ROLL_CHANNELS, t)
    for i, p in enumerate(pitches):
        roll[0, p - C.MIDI_MIN, 5 * i : 5 * i + 40] = 0.7
    return roll


def test_note_detail_starts_as_the_source_then_follows_the_notes():
    source = random_postnet(3)
    net = TexturePostnet(TextureConfig(**{**source.config.to_dict(), "note_detail": True}))
    missing = net.load_state_dict(source.state_dict(), strict=False).missing_keys
    assert missing == ["note_input.weight"]  # the comb detail itself is computed, not saved
    mel, emb, noise = mel_like(1, 80), torch.randn(1, 2), torch.randn(1, 2, 80)
    roll = note_roll(80, (40, 52, 59))
    with torch.no_grad():
        assert torch.equal(net.eval()(mel, emb, noise, 1.0, roll), source(mel, emb, noise))
        with pytest.raises(ValueError, match="pass the piano roll"):
            net(mel, emb, noise)
        net.note_input.weight.normal_(0, 0.3)
        a = net(mel, emb, noise, 1.0, roll)
        b = net(mel, emb, noise, 1.0, note_roll(80, (41, 53, 60)))
        silent = net(mel, emb, noise, 1.0, torch.zeros_like(roll))
    assert (a - b).abs().amax() > 0.05  # other notes, other detail
    assert torch.equal(silent, source(mel, emb, noise))  # no notes: no comb detail
    assert TextureConfig.from_dict({**source.config.to_dict(), "note_detail": True}).note_detail


# -- export and the synthesizer ---------------------------------------------------------------


def two_synth_model(seed: int = 0) -> Mel2Mel:
    """A debug acoustic model with the synthetic dataset's two instruments."""
    return debug_model([("Synth 0", 80), ("Synth 1", 81)], seed)


@pytest.fixture
def exported(tmp_path) -> Path:
    """A folder with an acoustic export and a (randomized) texture post-net for it."""
    folder = tmp_path / "model"
    folder.mkdir()
    weights, _ = save_pretrained(two_synth_model(), folder)
    save_texture(random_postnet(), folder / "acoustic", weights_digest(weights), {"step": 3})
    return folder


def test_export_round_trip_and_wrong_acoustic(exported, tmp_path):
    weights = exported / "acoustic.safetensors"
    net = load_texture(exported / "acoustic", weights)
    assert net is not None and net.metadata["step"] == 3 and net.default_strength == 1.0
    assert state_max_diff(net.state_dict(), random_postnet().state_dict()) == 0
    assert load_texture(tmp_path / "nothing", weights) is None
    other, _ = save_pretrained(two_synth_model(seed=1), tmp_path / "other")  # other.*
    with pytest.raises(UserError, match="another acoustic model"):
        load_texture(exported / "acoustic", other)
    texture_paths(exported / "acoustic")[1].write_text("{")
    with pytest.raises(UserError, match="not a readable"):
        Synthesizer.from_pretrained(exported, vocoder="griffinlim")


def test_synthesizer_texture_stage(exported, tmp_path, monkeypatch):
    midi = write_midi(tmp_path / "a.mid", [(60, 0.0, 1.5, 90), (64, 0.5, 2.0, 80)])
    synth = Synthesizer.from_pretrained(exported, vocoder="griffinlim")
    plain = Synthesizer.from_pretrained(exported, vocoder="griffinlim", texture=False)
    assert synth.texture is not None and plain.texture is None
    textured, steady = synth.mel(midi, "Synth 1"), plain.mel(midi, "Synth 1")
    assert np.array_equal(synth.mel(midi, "Synth 1", texture=0), steady)
    assert np.abs(textured - steady).mean() > 1e-3
    assert np.array_equal(synth.mel(midi, "Synth 1"), textured)  # reproducible
    reseeded = Synthesizer.from_pretrained(exported, vocoder="griffinlim", seed=5)
    assert not np.array_equal(reseeded.mel(midi, "Synth 1"), textured)
    # chunking: small texture chunks (with the receptive field as context) change nothing
    monkeypatch.setattr(streams, "TEXTURE_CHUNK_FRAMES", 37)
    np.testing.assert_allclose(synth.mel(midi, "Synth 1"), textured, atol=1e-5)
    # a morph drives the post-net's embedding frame by frame, like the acoustic model's: its
    # mel is the post-net, run once over the whole steady mel, with the morph's embedding at
    # each frame (not one fixed embedding)
    spec = "Synth 0@0s,Synth 1@2s"
    morph, morph_steady = synth.mel(midi, spec, texture=1), synth.mel(midi, spec, texture=0)
    frames, timbre = morph.shape[1], synth.timbre(spec)
    noise = texture_noise(synth.seed, 0, frames, synth.texture.config.noise_channels)[None]
    per_frame, fixed = (
        torch.from_numpy(e[None]) for e in (timbre.at_frames(0, frames), timbre.vector())
    )
    with torch.no_grad():
        steady_t = torch.from_numpy(morph_steady)[None]
        expected = synth.texture(steady_t, per_frame, noise, 1.0)[0].numpy()
        one_embedding = synth.texture(steady_t, fixed, noise, 1.0)[0].numpy()
    np.testing.assert_allclose(morph, expected, rtol=0, atol=1e-4)
    assert np.abs(one_embedding - expected).max() > 0.05
    audio = synth.render(midi, "Synth 1", texture=0.5)
    assert np.array_equal(np.concatenate(list(synth.stream(midi, "Synth 1", texture=0.5))), audio)
    with pytest.raises(UserError, match="between 0 and 4"):
        synth.render(midi, "Synth 1", texture=-1)


def test_synthesizer_gives_the_post_net_the_notes(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    weights, _ = save_pretrained(two_synth_model(), folder)
    net = random_postnet(note_detail=True)
    with torch.no_grad():
        net.note_input.weight.normal_(0, 0.03)
    save_texture(net, folder / "acoustic", weights_digest(weights), {"step": 3})
    midi = write_midi(tmp_path / "a.mid", [(40, 0.0, 1.5, 90), (64, 0.5, 2.0, 80)])
    synth = Synthesizer.from_pretrained(folder, vocoder="griffinlim")
    assert synth.texture is not None and synth.texture.config.note_detail
    textured = synth.mel(midi, "Synth 1")
    steady = synth.mel(midi, "Synth 1", texture=0)
    frames, timbre = textured.shape[1], synth.timbre("Synth 1")
    noise = texture_noise(synth.seed, 0, frames, synth.texture.config.noise_channels)[None]
    roll = torch.from_numpy(piano_roll(read_notes(midi).notes, frames))[None]
    emb = torch.from_numpy(timbre.vector()[None])
    with torch.no_grad():
        args = (torch.from_numpy(steady)[None], emb, noise, 1.0)
        expected = synth.texture(*args, roll)[0].numpy()
        other = synth.texture(*args, torch.roll(roll, 3, dims=1))[0].numpy()
    np.testing.assert_allclose(textured, expected, rtol=0, atol=1e-4)
    assert np.abs(other - expected).max() > 0.05  # the notes it was given matter
    monkeypatch.setattr(streams, "TEXTURE_CHUNK_FRAMES", 37)  # chunks get their own roll
    np.testing.assert_allclose(synth.mel(midi, "Synth 1"), textured, atol=1e-5)


def test_render_cli_texture_option(exported, tmp_path):
    midi = write_midi(tmp_path / "a.mid", [(60, 0.0, 1.0, 90)])
    outs = []
    for i, extra in enumerate((["--texture", "0"], [], ["--seed", "3"])):
        out = tmp_path / f"o{i}.wav"
        args = ["render", str(midi), "-o", str(out), "--model", str(exported), "-q"]
        assert main([*args, "--vocoder", "griffinlim", "-i", "Synth 0", *extra]) == 0
        outs.append(out.read_bytes())
    assert len(set(outs)) == 3
    assert main(["render", str(midi), "-o", str(tmp_path / "x.wav"), "--texture", "9"]) == 2
    with pytest.warns(UserWarning, match="no texture post-net"):
        args = ["render", str(midi), "-o", str(tmp_path / "p.wav"), "--model", "paper", "-q"]
        assert main([*args, "--vocoder", "griffinlim", "--texture", "1"]) == 0


# -- training ---------------------------------------------------------------------------------


def test_band_modulation_tells_a_tremolo_from_flicker():
    t = torch.arange(128) / C.FRAME_RATE
    steady = torch.full((1, 80, 128), -5.0)
    tremolo = steady + 0.3 * torch.sin(2 * math.pi * 6.0 * t)  # every bin, 6 Hz
    flicker = steady + 0.3 * (-1.0) ** torch.arange(128)  # frame to frame: 62.5 Hz
    bands = [lo for lo, _ in MODULATION_BANDS]
    for mel, band in ((tremolo, bands.index(4.0)), (flicker, len(bands) - 1)):
        spectrum = band_modulation(mel)  # 1 x 8 groups x bands, logs
        assert spectrum.shape == (1, 8, len(MODULATION_BANDS))
        assert (spectrum[0].argmax(-1) == band).all()
        assert (spectrum[0, :, band] > band_modulation(steady)[0, :, band] + 10).all()


def tiny_run(acoustic: Path, **train) -> TextureRunConfig:
    base = dict(
        steps=4, batch_size=2, crop_frames=32, warmup_steps=1, num_workers=0, log_every=2,
        valid_every=2, valid_crop_frames=64, checkpoint_every=2, mean_frames=8,
        disc_channels=2, acoustic=str(acoustic),
    )  # fmt: skip
    train_config = TextureTrainConfig(**{**base, **train})
    return TextureRunConfig(TextureConfig.debug().to_dict(), train_config)


@pytest.fixture(scope="module")
def acoustic_export(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("acoustic")
    save_pretrained(two_synth_model(), folder)
    return folder / "acoustic"


def test_resume_equals_uninterrupted(synthetic_dataset, acoustic_export, tmp_path):
    config = tiny_run(acoustic_export, modulation_weight=1.0)
    straight = train_texture(synthetic_dataset, tmp_path / "a", config, progress=False)
    assert straight.step == 4 and set(straight.valid) >= {"valid/change_true_db", "valid/mae_db"}
    scalars = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").open()]
    assert any(s.get("train/modulation", 0) > 0 for s in scalars)
    first = train_texture(synthetic_dataset, tmp_path / "b", config, stop_at=2, progress=False)
    assert first.step == 2
    resumed = train_texture(synthetic_dataset, tmp_path / "b", config, progress=False)
    assert resumed.step == 4
    assert state_max_diff(straight.model.state_dict(), resumed.model.state_dict()) == 0
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt", kind="texture") for r in "ab")
    assert state_max_diff(a["disc"], b["disc"]) == 0
    assert (straight.model.output.weight != 0).any()  # the post-net moved off the identity
    # init_from starts a new run from the post-net of another (stop_at=0: no step taken)
    started = train_texture(
        synthetic_dataset, tmp_path / "c",
        tiny_run(acoustic_export, modulation_weight=1.0, init_from=str(tmp_path / "a")),
        stop_at=0, progress=False,
    )  # fmt: skip
    assert state_max_diff(started.model.state_dict(), straight.model.state_dict()) == 0
    cache = next((tmp_path / "a").glob("predicted-*"))
    assert len(list(cache.rglob("*.pred.npy"))) == 10  # 5 train/valid pieces x 2 instruments


def test_a_post_net_that_reads_the_notes_trains_and_its_discriminator_sees_them(
    synthetic_dataset, acoustic_export, tmp_path
):
    config = tiny_run(acoustic_export)
    config = TextureRunConfig({**config.model, "note_detail": True}, config.train)
    result = train_texture(synthetic_dataset, tmp_path / "n", config, stop_at=2, progress=False)
    assert result.step == 2 and result.model.config.note_detail
    assert (result.model.note_input.weight != 0).any()  # it learned from the comb detail
    disc = load_checkpoint(tmp_path / "n" / "checkpoint.pt", kind="texture")["disc"]
    assert disc["conv2d.0.weight"].shape[1] == 3  # true/fake, prediction, the notes' detail


def test_cli_train_export_and_render(synthetic_dataset, acoustic_export, tmp_path, capsys):
    run = tmp_path / "run"
    sets = ["model.channels=8", "model.noise_channels=2", "model.dilations=[1,2]",
            f"train.acoustic={acoustic_export}", "train.steps=2", "train.batch_size=2",
            "train.crop_frames=32", "train.warmup_steps=1", "train.num_workers=0",
            "train.valid_every=2", "train.disc_channels=2", "train.mean_frames=8"]  # fmt: skip
    args = ["train", "texture", "--data", str(synthetic_dataset), "--output", str(run)]
    assert main([*args, "--no-progress", *[f"--set={s}" for s in sets]]) == 0
    folder = acoustic_export.parent
    assert main(["export", "texture", str(run), "-o", str(folder), "--strength", "0.5"]) == 0
    desc = json.loads((folder / "acoustic_texture.json").read_text())
    assert desc["kind"] == "texture" and desc["metadata"]["step"] == 2
    assert desc["default_strength"] == 0.5
    assert main(["export", "texture", str(run), "-o", str(folder)]) == 2  # no silent overwrite
    assert "pass -f" in capsys.readouterr().err
    synth = Synthesizer.from_pretrained(folder, vocoder="griffinlim")
    assert synth.texture is not None and synth.texture.config.channels == 8
    assert synth.texture_strength == 0.5  # the export's choice, unless told otherwise
    assert Synthesizer.from_pretrained(folder, texture_strength=2.0).texture_strength == 2.0
    # a strength per instrument: by name or program, the others the plain value
    per = ["--strength", "0.4", "--strength", "synth 1=0.9", "-f"]
    assert main(["export", "texture", str(run), "-o", str(folder), *per]) == 0
    desc = json.loads((folder / "acoustic_texture.json").read_text())
    assert desc["default_strength"] == 1.0
    rows = {r["name"]: r["strength"] for r in desc["instrument_strengths"]}
    assert rows == {"Synth 0": 0.4, "Synth 1": 0.9}
    synth = Synthesizer.from_pretrained(folder, vocoder="griffinlim")
    assert synth.texture_strength == 1.0
    assert synth.texture.instrument_strengths.strengths == (0.4, 0.9)
    midi = write_midi(tmp_path / "a.mid", [(60, 0.0, 1.0, 90)])
    one, scaled = synth.mel(midi, "Synth 1", texture=1), synth.mel(midi, "Synth 1", texture=0.5)
    steady = synth.mel(midi, "Synth 1", texture=0)
    np.testing.assert_allclose(scaled - steady, (one - steady) / 2, atol=1e-4)
    for bad, said in (("Cello=0.5", "valid: Synth 0"), ("Synth 0=x", "INSTRUMENT=S"),
                      ("Synth 0=5", "between 0 and 4")):  # fmt: skip
        assert (
            main(["export", "texture", str(run), "-o", str(folder), "-f", "--strength", bad]) == 2
        )
        assert said in capsys.readouterr().err
    # the acoustic model it was trained on is needed to place the instruments
    other = tmp_path / "other"
    save_pretrained(two_synth_model(seed=1), other)
    with pytest.raises(UserError, match="trained on"):
        trained_on(weights_digest(acoustic_export.with_suffix(".safetensors")), [other])


def test_wrong_dataset_instruments(real_dataset, acoustic_export, tmp_path):
    with pytest.raises(UserError, match="do not fit"):
        train_texture(real_dataset, tmp_path / "r", tiny_run(acoustic_export), progress=False)


def _train_tiny(data: str, run: Path):
    acoustic = Path(data).parent / "acoustic-for-ranks" / "acoustic"
    return train_texture(data, run, tiny_run(acoustic, steps=2), progress=False).model


def test_two_process_replicas_stay_identical(synthetic_dataset, tmp_path):
    (synthetic_dataset.parent / "acoustic-for-ranks").mkdir(exist_ok=True)
    save_pretrained(two_synth_model(), synthetic_dataset.parent / "acoustic-for-ranks")
    w0, w1 = train_two_ranks(_train_tiny, synthetic_dataset, tmp_path)
    assert state_max_diff(w0, w1) == 0
    assert any((w0[k] != 0).any() for k in w0 if k.startswith("output."))


def test_shipped_postnet_restores_organ_texture(tmp_path):
    """The shipped post-net belongs to the shipped default model (not to --model paper), and on
    the example chorale as organ it adds frame-to-frame change without moving the level, at
    the speed of FluidSynth's modulation (4-16 Hz), not as frame-to-frame flicker."""
    from mel2mel.examples import write_example

    example = write_example(tmp_path / "example.mid")
    synth = Synthesizer.from_pretrained(vocoder="griffinlim")
    assert synth.texture is not None
    assert Synthesizer.from_pretrained("paper", vocoder="griffinlim").texture is None
    textured = synth.mel(example, "organ", duration=10)
    steady = synth.mel(example, "organ", duration=10, texture=0)
    loud = steady.max(0) > steady.max() - 5  # frames with music, not the floor
    change = [np.abs(np.diff(m[:, loud], axis=1)).mean() for m in (textured, steady)]
    assert change[0] > 2 * change[1]
    assert abs(float((textured - steady)[:, loud].mean())) < 0.06  # nats, ~0.5 dB
    added = torch.from_numpy(textured - steady)[..., : steady.shape[1] // 128 * 128]
    crops = added.reshape(C.N_MELS, -1, 128).transpose(0, 1)  # 128-frame crops
    power = band_modulation(crops).exp().mean((0, 1))  # per band of MODULATION_BANDS
    below_16_hz = [hi <= 16.0 for _, hi in MODULATION_BANDS]
    # the post-net before the modulation loss put 99 % of it above 16 Hz (docs/TEXTURE.md)
    assert power[below_16_hz].sum() > 0.8 * power.sum()
    # the strongest texture the CLI allows keeps every bin near its frame (it once threw
    # bursts 30-40 dB above the frame's loudest bin, and full-scale noise at strength 4)
    strongest = synth.mel(example, "organ", duration=10, texture=4)
    assert (strongest <= steady.max(0) + CEILING + 1e-5).all()


def test_init_from_an_exported_post_net(synthetic_dataset, acoustic_export, tmp_path):
    run = train_texture(
        synthetic_dataset, tmp_path / "a", tiny_run(acoustic_export), progress=False
    )
    save_texture(run.model, tmp_path / "export" / "other", acoustic_digest="0" * 16)
    desc = tmp_path / "export" / "other_texture.json"
    started = train_texture(
        synthetic_dataset, tmp_path / "b", tiny_run(acoustic_export, init_from=str(desc)),
        stop_at=0, progress=False,
    )  # fmt: skip
    assert state_max_diff(started.model.state_dict(), run.model.state_dict()) == 0
    assert (started.model.output.weight != 0).any()


def test_init_from_a_post_net_of_another_embedding_size(synthetic_dataset, acoustic_export,
                                                        tmp_path, capsys):  # fmt: skip
    """The 10-instrument post-net (2-D FiLM inputs) starts a 100-instrument one (10-D): the
    convolutions are taken, the FiLM maps start fresh (as the identity)."""
    other = random_postnet(embedding_dim=5)
    save_texture(other, tmp_path / "export" / "wide", acoustic_digest="0" * 16)
    started = train_texture(
        synthetic_dataset, tmp_path / "run",
        tiny_run(acoustic_export, init_from=str(tmp_path / "export" / "wide_texture.json")),
        stop_at=0, progress=False,
    )  # fmt: skip
    ours, theirs = started.model.state_dict(), other.state_dict()
    films = [k for k in ours if ".film." in k and k.endswith(".weight")]
    assert films and all(ours[k].shape != theirs[k].shape for k in films)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k not in films)
    assert all(not ours[k].any() for k in films if ".gamma." in k)  # identity modulation
    assert "blocks.0.film.gamma.weight" in capsys.readouterr().out
