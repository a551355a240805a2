"""Fast Mel2Mel inference: folding, one-sided windows, two threads, against the forward pass."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import mild_heights

import mel2mel
from mel2mel import constants as C
from mel2mel.midi import Note, piano_roll
from mel2mel.models import AcousticConfig, Mel2Mel, load_acoustic
from mel2mel.models.acoustic_fast import fast_forward, fold_static, one_sided_windows

pytestmark = pytest.mark.usefixtures("single_thread")

DB_PER_NAT = 20 / math.log(10)
PRETRAINED_DIR = Path(mel2mel.__file__).parent / "pretrained"


def tiny(**kw) -> Mel2Mel:
    torch.manual_seed(0)
    model = Mel2Mel(AcousticConfig.preset("debug", n_instruments=3, **kw)).eval()
    with torch.no_grad():  # non-trivial FiLM, so that folding it has something to get wrong
        for part in (model.film_in, model.film_out, model.harmonic, model.head):
            for p in part.parameters() if part is not None else ():
                p.normal_(0, 0.5)
        mild_heights(model)
    return model


def sparse_roll(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    """A roll with silent channels, like music: only 40 pitches ever play."""
    g = torch.Generator().manual_seed(seed)
    roll = torch.rand(batch, C.ROLL_CHANNELS, frames, generator=g)
    roll *= torch.rand(roll.shape, generator=g) > 0.9
    roll[:, 60:88] = 0
    roll[:, 148:] = 0
    return roll


def check_windows(batches, total: int, chunk: int, context: int) -> list[tuple[int, int, int]]:
    """Assert the window invariants; return all windows sorted by core."""
    for width, windows in batches:
        for w, s, e in windows:
            assert 0 <= w <= s < e <= w + width <= total  # inside the piece, core inside
            assert s - w >= context or w == 0  # enough context, or the true start
    windows = sorted((x for b in batches for x in b.windows), key=lambda x: x[1])
    assert windows[0][1] == 0 and windows[-1][2] == total
    assert all(a[2] == b[1] for a, b in itertools.pairwise(windows))  # cover once
    assert len(windows) == 1 or all(e - s <= chunk for _, s, e in batches[0].windows)
    return windows


@pytest.mark.parametrize(
    ("total", "chunk", "context"),
    [(1000, 128, 64), (1000, 300, 0), (999, 1000, 10), (1000, 900, 200), (7500, 1000, 250)],
)
def test_one_sided_windows_cover_the_piece_with_left_context(total, chunk, context):
    batches = one_sided_windows(total, chunk, context)
    assert len(batches) == 1  # one batch of equal windows without the silence rule
    check_windows(batches, total, chunk, context)


def test_silent_context_is_extended_back_to_the_last_notes():
    active = torch.zeros(3000, dtype=torch.bool)
    active[:1000] = True  # notes, then a 16 s tail of silence
    active[2600:2700] = True  # and a late note
    batches = one_sided_windows(3000, 500, 100, active)
    assert len(batches) == 2
    check_windows(batches, 3000, 500, 100)
    # the cores whose context is silent after notes merge into one, with context from 900
    assert batches[1] == (2100, [(900, 1500, 3000)])
    assert batches[0].windows == [(0, 0, 500), (400, 500, 1000), (900, 1000, 1500)]


def test_context_counts_only_frames_with_notes():
    active = torch.arange(3000) < 1150  # the context of the core at 1200 is half silent
    batches = one_sided_windows(3000, 600, 100, active)
    check_windows(batches, 3000, 600, 100)
    assert (1050, 1200, 1800) in batches[0].windows  # 100 frames with notes, in the main batch
    assert batches[1].windows == [(1050, 1800, 3000)]
    for context in (0, 1, 500):  # edge cases: no context, and contexts longer than a core
        check_windows(one_sided_windows(3000, 600, context, active), 3000, 600, context)


@pytest.mark.parametrize(
    ("coding", "harmonic", "head", "gate", "heights"),
    [("linear", False, 0, False, False), ("log", False, 0, False, False),
     ("linear+log", False, 0, False, False), ("linear+log", True, 0, False, False),
     ("linear+log", True, 12, False, False), ("linear+log", True, 0, True, False),
     ("linear+log", True, 12, True, False), ("linear+log", True, 0, False, True),
     ("linear+log", True, 12, True, True)],
)  # fmt: skip
def test_exact_fast_forward_matches_forward(coding, harmonic, head, gate, heights):
    model = tiny(
        velocity_coding=coding,
        harmonic_detail=harmonic,
        head_channels=head,
        detail_gate=gate,
        harmonic_heights=heights,
    )
    roll = sparse_roll(2, 700)
    # The folded path mixes the heights into the combs before the matmul, the forward after
    # it: the same sums in another order, times detail gains of up to 30 in this test model.
    atol = 1e-4 if heights else 1e-5
    with torch.inference_mode():
        for kw in ({"instrument": 1}, {"instrument": torch.tensor([0, 2])}):  # folded, unfolded
            ref = model(roll, **kw)
            for workers in (1, 2):
                out = model.infer(roll, workers=workers, **kw)
                assert out.shape == ref.shape
                assert torch.allclose(out, ref, atol=atol), kw
        per_frame = torch.randn(2, 2, 700)
        ref = model(roll, embedding=per_frame)
        assert torch.allclose(model.infer(roll, embedding=per_frame), ref, atol=1e-5)


def test_folding_is_exact_for_a_free_embedding():
    model = tiny()
    e = torch.tensor([0.7, -1.3])
    with torch.inference_mode():
        directions, w_out, b_out = fold_static(model, e)
        roll = sparse_roll(1, 50)
        ref = model(roll, embedding=e[None])
        out = fast_forward(model, roll, e[None])
    assert directions[0].w_ih.shape == (4 * 8, C.ROLL_CHANNELS)
    assert w_out.shape == (C.N_MELS, 16) and b_out.shape == (C.N_MELS,)
    assert torch.allclose(out, ref, atol=1e-5)


def test_frontend_and_stacked_models_fall_back():
    roll = sparse_roll(1, 400)
    with torch.inference_mode():
        frontend = tiny(frontend_layers=1)
        ref = frontend(roll, instrument=0)
        assert torch.allclose(frontend.infer(roll, instrument=0), ref, atol=1e-5)
        stacked = tiny(lstm_layers=2)
        ref = stacked(roll, instrument=0)
        assert torch.equal(stacked.infer(roll, instrument=0), ref)  # the plain forward
        out = stacked.infer(roll, instrument=0, chunk_frames=100, context_frames=100)
        assert torch.allclose(out, ref, atol=1e-4)


def test_chunked_windows_approximate_and_context_matters():
    model = tiny()
    roll = sparse_roll(1, 2000)
    with torch.inference_mode():
        ref = model(roll, instrument=1)
        for workers in (1, 2):
            out = model.infer(
                roll, instrument=1, chunk_frames=128, context_frames=64, workers=workers
            )
            # a small random LSTM forgets within 64 frames, so the windows agree with the full run
            assert torch.allclose(out, ref, atol=1e-4)
        blind = model.infer(roll, instrument=1, chunk_frames=128, context_frames=0)
    # without context every core restarts from a zero state: the cut must be visible
    assert (blind - ref).abs().max() > 1e-3


def test_silence_and_short_inputs():
    model = tiny()
    with torch.inference_mode():
        silent = torch.zeros(1, C.ROLL_CHANNELS, 300)
        # no channel is used: the folded LSTM still gets one (zero) input channel
        assert torch.allclose(
            model.infer(silent, instrument=0), model(silent, instrument=0), atol=1e-5
        )
        one = sparse_roll(1, 1)
        assert torch.allclose(model.infer(one, instrument=2), model(one, instrument=2), atol=1e-5)


def test_infer_restores_mode_and_threads():
    model = tiny().train()
    threads = torch.get_num_threads()
    model.infer(sparse_roll(1, 300), instrument=0, chunk_frames=100, context_frames=50, workers=2)
    assert model.training
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="chunk_frames"):
        model.infer(sparse_roll(1, 10), instrument=0, chunk_frames=0)


def chorale(seconds: float, seed: int = 0) -> torch.Tensor:
    """Four voices of random notes of 0.25-1 s, without rests, then 1 s of silence."""
    rng = np.random.default_rng(seed)
    notes = []
    for low in (48, 55, 60, 67):
        t = 0.0
        while t < seconds:
            d = float(rng.choice([0.25, 0.5, 1.0]))
            notes.append(
                Note(low + int(rng.integers(0, 8)), t, t + d, int(rng.integers(50, 110)), 0, 0)
            )
            t += d
    frames = round((seconds + 1.0) * C.FRAME_RATE)
    return torch.from_numpy(piano_roll(notes, frames))[None]


@pytest.mark.skipif(not (PRETRAINED_DIR / "acoustic.json").is_file(), reason="no shipped model")
def test_shipped_model_fast_paths_stay_close_to_exact():
    model = load_acoustic(PRETRAINED_DIR / "acoustic")
    roll = chorale(24.0)  # 3125 frames
    with torch.inference_mode():
        ref = model(roll, instrument=8)
        exact = model.infer(roll, instrument=8, workers=2)
        # the synthesizer's default context (4 s), twice that, and none
        chunked = model.infer(roll, instrument=8, chunk_frames=500, context_frames=500)
        longer = model.infer(roll, instrument=8, chunk_frames=500, context_frames=1000)
        blind = model.infer(roll, instrument=8, chunk_frames=500, context_frames=0)
    assert (exact - ref).abs().max() < 1e-4
    err, long_err, blind_err = ((x - ref).abs() * DB_PER_NAT for x in (chunked, longer, blind))
    # measured on the model trained on performances (pedal, long notes: a longer memory than
    # the chorale-only model's, which was within 0.001 dB at 2 s): 0.0095 dB mean, 0.29 dB
    # max with 4 s of context, 0.0003 / 0.006 dB with 8 s
    assert err.mean() < 0.02 and err.max() < 0.5
    assert long_err.mean() < 1e-3 and long_err.max() < 0.05
    assert blind_err.mean() > 0.01
