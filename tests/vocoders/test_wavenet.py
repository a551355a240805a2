"""WaveNet vocoder: mu-law, causality, incremental generation = full forward, overfitting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mel2mel.audio import log_mel
from mel2mel.vocoders import mulaw
from mel2mel.vocoders.wavenet import WaveNet, WaveNetConfig, training_step
from mel2mel.vocoders.wavenet_fast import (
    IncrementalGenerator,
    generate,
    generate_batched,
    generate_stream,
    teacher_forced_logits,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py


def _model(config: WaveNetConfig, seed: int = 0) -> WaveNet:
    """A model with random (nonzero) biases, so that every bias path is exercised."""
    torch.manual_seed(seed)
    model = WaveNet(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model


def _mel(frames: int, batch: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 80, frames, generator=g) * 2.0 - 6.0


# --- mu-law -------------------------------------------------------------------------------


def test_mulaw_round_trip_error_is_bounded() -> None:
    x = torch.linspace(-1.0, 1.0, 100_001)
    q = mulaw.quantize(x)
    assert q.dtype == torch.long and q.min() == 0 and q.max() == 255
    assert torch.all(q[1:] >= q[:-1])  # monotone
    err = (mulaw.dequantize(q) - x).abs()
    bound = (x.abs() + 1 / mulaw.MU) * ((1 + mulaw.MU) ** (1 / mulaw.MU) - 1) + 1e-6
    assert torch.all(err <= bound)
    assert err.max() < 0.023
    assert err[x.abs() < 0.01].max() < 3e-4  # quiet samples keep fine resolution


def test_mulaw_classes() -> None:
    assert mulaw.quantize(torch.zeros(3)).tolist() == [mulaw.SILENCE_CLASS] * 3
    classes = torch.arange(256)
    assert torch.equal(mulaw.quantize(mulaw.dequantize(classes)), classes)
    y = torch.rand(1000) * 2 - 1
    assert torch.allclose(mulaw.mulaw_decode(mulaw.mulaw_encode(y)), y, atol=1e-5)
    assert torch.equal(mulaw.quantize(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255]))


# --- model ----------------------------------------------------------------------------------


def test_config_and_shapes() -> None:
    cfg = WaveNetConfig()
    assert cfg.receptive_field == 2047
    assert WaveNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        WaveNetConfig(upsample_strides=(16, 4))
    model = WaveNet(WaveNetConfig.debug())
    logits = model(torch.randint(0, 256, (2, 300)), _mel(3, batch=2))
    assert logits.shape == (2, 256, 300)


def test_causality() -> None:
    model = _model(WaveNetConfig.debug())
    mel = _mel(4)
    x = torch.randint(0, 256, (1, 512))
    t0 = 200
    y = x.clone()
    y[:, t0:] = torch.randint(0, 256, (1, 512 - t0))
    with torch.no_grad():
        a, b = model(x, mel), model(y, mel)
    assert torch.equal(a[..., :t0], b[..., :t0])
    assert not torch.allclose(a[..., t0], b[..., t0])  # the input at t0 predicts sample t0


@pytest.mark.parametrize(
    "config", [WaveNetConfig.debug(), WaveNetConfig()], ids=["debug", "default"]
)
def test_incremental_equals_full_forward(config: WaveNetConfig) -> None:
    model = _model(config)
    frames = 6  # 768 samples: every queue of the default model (d <= 512) wraps around
    mel = _mel(frames, batch=2)
    x = torch.randint(0, 256, (2, frames * 128))
    with torch.no_grad():
        full = model(x, mel)
    inc = teacher_forced_logits(model, x, mel)
    assert torch.allclose(inc, full, atol=1e-4, rtol=1e-4)


def test_generated_samples_are_the_argmax_of_the_full_forward() -> None:
    model = _model(WaveNetConfig.debug())
    mel = _mel(5)
    audio = generate(model, mel, argmax=True)
    assert audio.shape == (1, 5 * 128)
    classes = mulaw.quantize(audio)
    inputs = torch.cat([torch.full((1, 1), mulaw.SILENCE_CLASS), classes[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model(inputs, mel)
    assert torch.equal(logits.argmax(1), classes)


def test_chunked_conditioning_is_exact() -> None:
    model = _model(WaveNetConfig.debug())
    mel = _mel(12)
    with torch.inference_mode():
        state = IncrementalGenerator(model, 1)
        whole = state.conditioning(mel, 0, 12)
        part = state.conditioning(mel, 5, 8)
    assert torch.allclose(part, whole[5 * 128 : 8 * 128], atol=1e-5)


def test_stream_equals_whole_generation_and_seed_is_reproducible() -> None:
    model = _model(WaveNetConfig.debug())
    mel = _mel(7)
    whole = generate(model, mel, seed=3)[0].numpy()
    chunks = list(generate_stream(model, mel, chunk_frames=2, seed=3))
    assert [len(c) for c in chunks] == [256, 256, 256, 128]
    assert np.array_equal(np.concatenate(chunks), whole)
    via_interface = np.concatenate(list(model.vocode_stream(mel[0], chunk_frames=3)))
    assert np.array_equal(via_interface, generate(model, mel, seed=0)[0].numpy())
    assert not np.array_equal(generate(model, mel, seed=4)[0].numpy(), whole)


def test_temperature_and_argmax() -> None:
    model = _model(WaveNetConfig.debug())
    mel = _mel(3)
    greedy = generate(model, mel, argmax=True)
    assert torch.equal(greedy, generate(model, mel, argmax=True, seed=9))
    cold = generate(model, mel, temperature=1e-4, seed=1)
    assert torch.equal(cold, greedy)
    with pytest.raises(ValueError):
        generate(model, mel, temperature=0.0)


def test_batched_generation() -> None:
    model = _model(WaveNetConfig.debug())
    mel = _mel(40)[0]
    audio = generate_batched(model, mel, chunk_frames=8, max_batch=3, seed=0)
    assert audio.shape == (40 * 128,)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    again = generate_batched(model, mel, chunk_frames=8, max_batch=3, seed=0)
    assert torch.equal(audio, again)
    # The vocoder interface (batch of one) uses batched generation.
    assert model.vocode(mel).shape == (40 * 128,)


def test_tiny_model_overfits_a_clip() -> None:
    torch.manual_seed(0)
    t = np.arange(1024) / 16_000
    clip = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1320 * t)
    frames = len(clip) // 128
    batch = {
        "audio": torch.tensor(clip, dtype=torch.float32)[None],
        "mel": torch.from_numpy(log_mel(clip)[:, :frames])[None],
    }
    model = WaveNet(WaveNetConfig.debug()).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = training_step(model, batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 0.8 * math.log(256)
    assert loss.item() < 0.1 * first
