"""Fast vocoder: shapes, ISTFT alignment, locality and exact streaming, losses, training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mel2mel.audio import log_mel, mel_filterbank
from mel2mel.vocoders import fast
from mel2mel.vocoders.fast import (
    FastVocoder,
    FastVocoderConfig,
    training_losses,
    training_step,
)
from mel2mel.vocoders.fast_layers import ISTFTHead
from mel2mel.vocoders.losses import (
    FastVocoderLoss,
    LogMelLoss,
    MultiResolutionSTFTLoss,
    consistency_loss,
    phase_derivative_loss,
)
from mel2mel.vocoders.refine import (
    FRAMES_PER_ITERATION,
    BandedMatrix,
    MelMatching,
    inverse_envelope,
    magnitude_into,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py


def _debug(**changes: object) -> FastVocoderConfig:
    return dataclasses.replace(FastVocoderConfig.debug(), **changes)


def _model(config: FastVocoderConfig | None = None, seed: int = 0) -> FastVocoder:
    """A model whose head is random too (it starts at zero deviation from the bin frequencies
    and at the magnitude prior), so that every path is exercised."""
    torch.manual_seed(seed)
    model = FastVocoder(config or FastVocoderConfig.debug()).eval()
    with torch.no_grad():
        model.head.proj.weight.normal_(0.0, 0.3)
        model.head.proj.bias.normal_(0.0, 0.3)
    return model


def _tones(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1100 * t)).astype(
        np.float32
    )


def _inputs(frames: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, 80, frames, generator=g) * 2 - 6
    roll = (torch.rand(batch, 176, frames, generator=g) > 0.97).float()
    return mel, roll


def test_config() -> None:
    cfg = FastVocoderConfig()
    assert FastVocoderConfig.from_dict(cfg.to_dict()) == cfg
    # network + 8 frames per refinement iteration + the overlap-add
    assert cfg.receptive_field == 3 * (cfg.layers + 1) + 8 * cfg.refine_iterations + 4
    params = sum(p.numel() for p in FastVocoder(cfg).parameters())
    assert params < 1_500_000  # small enough for 100x real time on two cores


def test_shapes_and_roll() -> None:
    model = _model()
    mel, roll = _inputs(20, batch=2)
    with torch.no_grad():
        y = model(mel, roll)
        assert y.shape == (2, 20 * 128)
        assert torch.equal(model(mel), model(mel, torch.zeros_like(roll)))  # no notes = zeros
        assert not torch.allclose(y, model(mel))
    assert model.vocode(mel[0]).shape == (20 * 128,)
    no_roll = _model(_debug(use_roll=False))
    assert not no_roll.uses_roll
    assert torch.equal(no_roll.vocode(mel, roll), no_roll.vocode(mel))


def test_istft_reconstructs_centred_frames() -> None:
    """Frame i of a centred STFT lands on sample 128 i: analysis + our ISTFT = identity."""
    head = ISTFTHead(dim=4, n_fft=512, prior_iterations=-1, integrate_phase=False)
    x = torch.randn(2, 128 * 50)
    spec = torch.stft(x, 512, 128, window=torch.hann_window(512), center=True, return_complex=True)
    spec = spec[..., :50].transpose(1, 2)  # the vocoder's grid (frames-major), 128 per frame
    y = head.istft(spec)
    assert y.shape == (2, 128 * 50)
    assert torch.allclose(y[:, :-256], x[:, :-256], atol=1e-4)


def test_magnitude_prior_gives_the_envelope_at_initialization() -> None:
    audio = _tones()
    mel = log_mel(audio)
    torch.manual_seed(0)
    y = FastVocoder(FastVocoderConfig.debug()).eval().vocode(mel).numpy()
    err = np.abs(log_mel(y)[:, : mel.shape[1]] - mel)
    assert err.mean() < 1.5  # untrained: the right envelope already


def _changed_frames(model: FastVocoder, t0: int) -> torch.Tensor:
    mel, roll = _inputs(80)
    other = mel.clone()
    other[..., t0] += 1.0
    with torch.no_grad():
        diff = (model(mel, roll) - model(other, roll)).abs()[0].reshape(80, 128).amax(1)
    return torch.nonzero(diff > 1e-6).flatten()


def test_direct_phase_output_depends_on_a_bounded_window_of_frames() -> None:
    model = _model(_debug(integrate_phase=False))
    rf = model.config.receptive_field
    changed = _changed_frames(model, 40)
    assert changed.min() >= 40 - rf and changed.max() <= 40 + rf and 40 in changed


def test_integrated_phase_output_never_depends_on_frames_far_ahead() -> None:
    model = _model()
    changed = _changed_frames(model, 40)
    assert changed.min() >= 40 - model.config.receptive_field and 40 in changed
    assert changed.max() == 79  # the phase carries the change forward


def test_integrated_phase_rotates_at_the_bin_frequencies_by_default() -> None:
    """At initialization the phase advance is each bin's centre frequency, so a constant
    spectrum is a stationary signal (a shift-invariant frame model alone cannot do this)."""
    torch.manual_seed(0)
    head = FastVocoder(FastVocoderConfig.debug()).head
    offset = torch.zeros(1, 200, head.bins)
    phase, _ = head.phase(offset, torch.zeros_like(offset))
    k, t, n = 5, torch.arange(1, 201), head.n_fft
    expect = ((k * 128 * t) % n).double() * (2 * np.pi / n)
    assert torch.allclose(
        torch.polar(torch.ones(200), phase[0, :, k]),
        torch.polar(torch.ones(200), expect.float()),
        atol=1e-4,
    )


def test_running_phase_carries_across_calls() -> None:
    head = FastVocoder(FastVocoderConfig.debug()).head
    delta = torch.randn(1, 300, head.bins)
    offset = torch.randn(1, 300, head.bins)
    whole, _ = head.phase(offset, delta)
    first, carry = head.phase(offset[:, :130], delta[:, :130], carry_index=129)
    second, _ = head.phase(offset[:, 130:], delta[:, 130:], carry)
    joined = torch.cat([first, second], dim=1)
    assert torch.allclose(
        torch.polar(torch.ones_like(joined), joined),
        torch.polar(torch.ones_like(whole), whole),
        atol=1e-3,
    )


# The network runs on blocks of whole chunks: one chunk, a few, or the whole input.
NETWORK_BLOCKS = pytest.mark.parametrize("network_frames", [1, 70, 2000], ids="net{}".format)


@NETWORK_BLOCKS
@pytest.mark.parametrize(
    "phase",
    [
        dict(),
        dict(integrate_phase=False),
        dict(partial_phase=True),
        dict(partial_phase=True, held_partials=True),
    ],
    ids=["integrated", "direct", "partials", "held"],
)
def test_streaming_equals_unchunked(
    phase: dict, network_frames: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The roll's partials look back over the frames a key is held (60), beyond the context."""
    monkeypatch.setattr(fast, "STREAM_NETWORK_FRAMES", network_frames)
    cfg = _debug(**phase)
    model = _model(cfg)
    mel, roll = _inputs(150)
    whole = model.vocode(mel, roll)[0].numpy()
    chunks = list(model.vocode_stream(mel[0], chunk_frames=32, roll=roll[0]))
    assert [len(c) for c in chunks] == [32 * 128] * 4 + [22 * 128]
    assert np.allclose(np.concatenate(chunks), whole, atol=1e-4)
    assert np.allclose(model.vocode_long(mel, roll, chunk_frames=7), whole, atol=1e-4)
    # Chunks shorter than the overlap-add window still carry the phase correctly.
    short = model.vocode(mel[..., :12], roll[..., :12])[0].numpy()
    assert np.allclose(model.vocode_long(mel[..., :12], roll[..., :12], 1), short, atol=1e-4)


REFINED = dict(n_fft=1024, refine_iterations=2)


@NETWORK_BLOCKS
def test_refined_streaming_equals_unchunked(
    network_frames: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast, "STREAM_NETWORK_FRAMES", network_frames)
    model = _model(_debug(**REFINED))
    assert model.config.receptive_field == _debug(n_fft=1024).receptive_field + 2 * 8
    mel, roll = _inputs(150)
    for notes in (dict(), dict(partial_phase=True), dict(partial_phase=True, held_partials=True)):
        model = _model(_debug(**REFINED, **notes))
        whole = model.vocode(mel, roll)[0].numpy()
        assert np.allclose(model.vocode_long(mel, roll, chunk_frames=37), whole, atol=1e-4)
        assert np.allclose(model.vocode_long(mel, roll, chunk_frames=5), whole, atol=1e-4)


def test_refinement_brings_the_mel_toward_the_target() -> None:
    target = torch.from_numpy(log_mel(_tones(1.5)))[None]
    plain = _model(_debug(n_fft=1024))
    refined = FastVocoder(_debug(**REFINED)).eval()
    refined.load_state_dict(plain.state_dict())

    def error(model: FastVocoder) -> float:
        audio = model.vocode(target)[0].numpy()
        return float(np.abs(log_mel(audio)[:, : target.shape[-1]] - target[0].numpy()).mean())

    before, after = error(plain), error(refined)
    assert after < 0.7 * before, (before, after)
    with pytest.raises(ValueError, match="n_fft"):
        _debug(refine_iterations=1)  # the debug head's 512-point frames cannot be refined


def test_in_place_refinement_equals_the_differentiable_one() -> None:
    """Inference runs a fused, in-place copy of the refinement; training the plain one."""
    torch.manual_seed(0)
    target = torch.from_numpy(log_mel(_tones(0.8)))[None]  # [1 x 80 x T]
    t = target.shape[-1]
    magnitude = torch.exp(torch.randn(2, t, 513) - 3.0)
    spec = torch.polar(magnitude, torch.rand(2, t, 513) * 6.3)
    refine = MelMatching(step=1.5)
    inputs = spec.clone(), magnitude.clone()
    with torch.no_grad():
        fast = refine(spec, target.expand(2, -1, -1), 3, magnitude)
        assert torch.equal(refine(spec, target, 0), spec)
    with torch.enable_grad():
        spec_g = spec.clone().requires_grad_()
        slow = refine(spec_g, target.expand(2, -1, -1), 3)
        assert slow.requires_grad
    assert torch.allclose(fast, slow.detach(), rtol=1e-4, atol=1e-4 * slow.abs().max().item())
    assert torch.equal(spec, inputs[0]) and torch.equal(magnitude, inputs[1])  # left alone
    head = ISTFTHead(dim=4, n_fft=1024, prior_iterations=-1, integrate_phase=False)
    assert torch.allclose(refine.istft(fast), head.istft(fast), atol=1e-6)
    # Context frames that the caller discards are dropped as soon as nothing depends on them.
    d = 3 * FRAMES_PER_ITERATION
    for context, keep in [((True, True), slice(d, t - d)), ((False, True), slice(0, t - d))]:
        with torch.no_grad():
            part = refine(spec, target.expand(2, -1, -1), 3, magnitude, context)
        assert torch.allclose(part, fast[:, keep], rtol=1e-4, atol=1e-5)
        with torch.enable_grad():
            part_g = refine(spec_g, target.expand(2, -1, -1), 3, None, context)
        assert torch.allclose(part, part_g.detach(), rtol=1e-4, atol=1e-4 * part.abs().max())
    with pytest.raises(ValueError, match="too few"):
        refine(spec[:, :48], target[..., :48], 3, None, (True, True))


@pytest.mark.parametrize("t", [1, 5, 16, 17, 40])
def test_inverse_envelope(t: int) -> None:
    window = torch.hann_window(1024)
    square = window.square().view(8, 128)
    env = torch.zeros(t + 7, 128)
    for k in range(8):
        env[k : k + t] += square[k]
    assert torch.equal(inverse_envelope(window, 128, t), 1.0 / env[4 : 4 + t].clamp_min(1e-8))


def test_banded_products_and_fast_kernels_equal_the_plain_ones() -> None:
    torch.manual_seed(0)
    fbank_t = torch.from_numpy(mel_filterbank()).T.contiguous()  # [513 x 80], banded
    x = torch.rand(2, 7, 513)
    for blocks in (1, 4, 8, 80):
        mel = BandedMatrix(fbank_t, blocks)
        assert torch.allclose(mel(x), x @ fbank_t, rtol=1e-5, atol=1e-7)
        g = torch.randn(3, 80)
        spread = BandedMatrix(fbank_t.T.contiguous(), blocks)
        assert torch.allclose(spread(g), g @ fbank_t.T, rtol=1e-5, atol=1e-7)
    z = torch.randn(3, 513, dtype=torch.complex64)
    assert torch.allclose(magnitude_into(z, torch.empty(3, 513)), z.abs())
    mag, phase = torch.rand(4, 9), torch.randn(4, 9) * 50
    assert torch.allclose(ISTFTHead.polar(mag, phase), torch.polar(mag, phase), atol=1e-6)
    # the padded copy of the head's projection follows in-place weight updates
    head = _model(_debug(n_fft=1024)).head
    x = torch.randn(1, 5, head.proj.in_features)
    with torch.no_grad():
        assert torch.equal(head._project(x)[..., : head.proj.out_features], head.proj(x))
        head.proj.weight.mul_(2.0)
        assert torch.equal(head._project(x)[..., : head.proj.out_features], head.proj(x))


def test_long_inputs_are_vocoded_through_the_stream() -> None:
    model = _model()
    mel, roll = _inputs(2 * 1000 + 50, batch=2)
    with torch.no_grad():
        direct = model(mel, roll)
    assert torch.allclose(model.vocode(mel, roll), direct, atol=1e-4)


def test_losses() -> None:
    x = torch.randn(2, 4096) * 0.1
    y = torch.randn(2, 4096) * 0.1
    stft = MultiResolutionSTFTLoss()
    same = stft(x, x)
    assert same["spectral_convergence"].item() < 1e-6 and same["log_magnitude"].item() < 1e-6
    diff = stft(y, x)
    assert diff["spectral_convergence"].item() > 0.5 and diff["log_magnitude"].item() > 0.1
    assert LogMelLoss()(x, x).item() == 0.0
    total = FastVocoderLoss(stft_weight=1.0, mel_weight=2.0)(y, x)
    expect = diff["spectral_convergence"] + diff["log_magnitude"] + 2 * total["log_mel"]
    assert torch.allclose(total["loss"], expect)
    # Spectrum-based terms: zero for the exact STFT of the target, positive otherwise.
    window = torch.hann_window(512)
    spec = torch.stft(x, 512, 128, window=window, pad_mode="constant", return_complex=True)
    spec = spec[..., : x.shape[1] // 128].transpose(1, 2)
    assert phase_derivative_loss(spec, x).item() < 1e-4
    assert phase_derivative_loss(spec * 1j ** torch.rand(spec.shape), x).item() > 0.1
    audio_hat = ISTFTHead(4, 512, -1, False).istft(spec)
    assert consistency_loss(spec, audio_hat).item() < 1e-3
    random_phase = torch.polar(spec.abs(), torch.rand(spec.shape) * 6.3)
    head = ISTFTHead(4, 512, -1, False)
    assert consistency_loss(random_phase, head.istft(random_phase)).item() > 0.3
    terms = FastVocoderLoss(phase_weight=0.5)(audio_hat, x, spec)
    assert {"consistency", "phase"} <= set(terms)


def test_roll_dropout_only_in_training() -> None:
    model = _model(_debug(roll_dropout=1.0))
    mel, roll = _inputs(16, batch=2)
    batch = {"mel": mel, "roll": roll, "audio": torch.zeros(2, 16 * 128)}
    model.train()
    with torch.no_grad():
        dropped = training_losses(model, batch)["loss"]
        batch_no_roll = {"mel": mel, "audio": batch["audio"]}
        assert torch.allclose(dropped, training_losses(model, batch_no_roll)["loss"])
        model.eval()
        assert not torch.allclose(dropped, training_losses(model, batch)["loss"])


def test_config_phase_weight_adds_the_phase_term() -> None:
    model = _model(_debug())
    mel, _ = _inputs(16, batch=2)
    batch = {"mel": mel, "audio": torch.randn(2, 16 * 128) * 0.1}
    with torch.no_grad():
        plain = training_losses(model, batch)
        weighted = _model(_debug(phase_weight=2.0))
        weighted.load_state_dict(model.state_dict())
        terms = training_losses(weighted, batch)
    assert "phase" not in plain and terms["phase"].item() > 0
    assert torch.allclose(terms["loss"], plain["loss"] + 2.0 * terms["phase"])
    with pytest.raises(ValueError, match="phase_weight"):
        _debug(phase_weight=-1.0)


def test_training_reduces_the_loss() -> None:
    torch.manual_seed(0)
    audio = torch.from_numpy(_tones(0.3))[None]
    frames = audio.shape[1] // 128
    batch = {"audio": audio, "mel": torch.from_numpy(log_mel(audio[0].numpy())[:, :frames])[None]}
    model = FastVocoder(FastVocoderConfig.debug()).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = training_step(model, batch)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])


def test_training_through_the_refinement() -> None:
    """With ``train_refine_iterations`` the loss is taken after unrolled refinement, and its
    gradient reaches the network."""
    torch.manual_seed(0)
    audio = torch.from_numpy(_tones(0.3))[None]
    frames = audio.shape[1] // 128
    batch = {"audio": audio, "mel": torch.from_numpy(log_mel(audio[0].numpy())[:, :frames])[None]}
    plain = FastVocoder(_debug(n_fft=1024)).train()
    unrolled = FastVocoder(_debug(n_fft=1024, train_refine_iterations=2)).train()
    unrolled.load_state_dict(plain.state_dict())
    terms = training_losses(unrolled, batch)
    terms["loss"].backward()
    grads = [p.grad for p in unrolled.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert unrolled.head.proj.weight.grad.abs().sum() > 0
    # the refined output is closer to the target mel than the network's own
    assert terms["log_mel"] < training_losses(plain, batch)["log_mel"]
