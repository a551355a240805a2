"""The streams a render is made of: mel windows, texture chunks, vocoder chunks.

* :func:`acoustic_stream` runs the acoustic model on windows: a core of ``chunk_frames``
  frames with ``context_frames`` frames of real context on each side, ``batch_windows``
  windows per call; consecutive cores overlap by ``crossfade_frames`` frames, cross-faded
  linearly in the log domain. A piece that fits in one window runs through the whole BiLSTM.
* :func:`texture_stream` runs the texture post-net on chunks of ``TEXTURE_CHUNK_FRAMES`` with
  its receptive field as context; its noise is a function of the frame and the seed.
* :func:`vocode_frames` feeds the vocoder as the mel arrives, through the one chunked loop
  :func:`mel2mel.vocoders.base.vocode_windows` (the fast vocoder's phase-carrying
  :meth:`~mel2mel.vocoders.fast.FastVocoder.stream_frames` excepted).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel.models.beats import NoteBeats
from mel2mel.models.texture import texture_noise
from mel2mel.synthesis.notes import NoteRoll
from mel2mel.timbre.spec import Timbre
from mel2mel.vocoders.base import Vocoder, crossfade_curves, vocode_windows
from mel2mel.vocoders.fast import FastVocoder

if TYPE_CHECKING:
    from mel2mel.synthesizer import Synthesizer

VOCODER_CHUNK_FRAMES = 1000
TEXTURE_CHUNK_FRAMES = 2000
WAVENET_CHUNK_FRAMES = 2000  # batched generation splits each chunk into parallel streams
WAVENET_WARMUP_FRAMES, WAVENET_CROSSFADE_FRAMES = 4, 2  # as generate_batched's seams


def mel_stream(
    synth: Synthesizer, roll: NoteRoll, timbre: Timbre, lo: int, hi: int, strength: float,
    seed: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """The log-mel of frames ``[lo, hi)`` in consecutive pieces: ``synth``'s acoustic model's,
    with texture of ``strength`` from noise seeded by ``seed`` when there is a post-net, the
    beats of its instrument's layers when it has them (phases seeded by ``seed``), and the
    notes' channel-volume gain.

    Yields
    ------
    ``(Tensor[N_MELS x n], Tensor[ROLL_CHANNELS x n])``: the mel and roll of the next
    ``n`` frames, on the device.
    """
    chunks = acoustic_stream(synth, roll, timbre, lo, hi)
    if synth.texture is not None and strength != 0:
        chunks = texture_stream(synth, chunks, timbre, lo, hi, strength, seed)
    beats = synth.acoustic.drawn_beats
    if beats is not None and synth.beats != 0:
        chunks = beats_stream(beats, chunks, roll, timbre, lo, synth.beats, seed)
    if roll.log_gain is None:
        return chunks
    return apply_gain(chunks, roll.log_gain, lo)


def acoustic_stream(
    synth: Synthesizer, roll: NoteRoll, timbre: Timbre, lo: int, hi: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The acoustic model's log-mel of frames ``[lo, hi)`` in consecutive pieces.

    Yields
    ------
    ``(Tensor[N_MELS x n], Tensor[ROLL_CHANNELS x n])``: the mel and roll of the next
    ``n`` frames, on the device.
    """
    total, ctx, xf = roll.num_frames, synth.context_frames, synth.crossfade_frames
    if total <= synth.exact_frames:
        width, chunk = total, hi - lo  # one window: the exact whole-piece forward
    else:  # the fewest cores of at most chunk_frames, all of (nearly) equal size
        n_cores = -(-(hi - lo) // synth.chunk_frames)
        chunk = -(-(hi - lo) // n_cores)
        width = min(total, chunk + xf + 2 * ctx)
    cores = list(range(lo, hi, chunk))
    static = timbre.is_static
    tail: torch.Tensor | None = None
    for i in range(0, len(cores), synth.batch_windows):
        group = cores[i : i + synth.batch_windows]
        windows = [min(max(s - ctx, 0), total - width) for s in group]
        rolls = torch.from_numpy(np.stack([roll.window(w, w + width) for w in windows]))
        if static:
            emb = torch.from_numpy(timbre.vector()[None]).expand(len(group), -1)
        else:
            emb = torch.from_numpy(np.stack([timbre.at_frames(w, width) for w in windows]))
        rolls, emb = rolls.to(synth.device), emb.to(synth.device)
        with torch.inference_mode():
            # the same windows, exactly, through the fast path: layers folded into the
            # LSTM, its two directions in parallel threads (mel2mel.models.acoustic_fast)
            out = synth.acoustic.infer(rolls, embedding=emb)
            out = synth.acoustic.sharpen(out, emb, synth.sharpen)  # frame by frame: exact
            # the roles read the roll REACH frames back and ANTICIPATION ahead: in the context
            out = synth.acoustic.contrast(out, emb, rolls, synth.contrast)
        for j, (s, w) in enumerate(zip(group, windows, strict=True)):
            end = min(hi, s + chunk)
            out_end = min(hi, end + xf)
            mel = out[j, :, s - w : out_end - w].clone()
            if tail is not None:
                n = tail.shape[1]
                fade_out, fade_in = (
                    torch.from_numpy(c).to(mel) for c in crossfade_curves(n, "linear")
                )
                mel[:, :n] = tail * fade_out + mel[:, :n] * fade_in
            keep = end - s
            tail = mel[:, keep:] if out_end > end else None
            yield mel[:, :keep], rolls[j, :, s - w : end - w]


def texture_stream(
    synth: Synthesizer, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], timbre: Timbre,
    lo: int, hi: int, strength: float, seed: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """``chunks`` (frames ``[lo, hi)``) through the texture post-net, in pieces of
    ``TEXTURE_CHUNK_FRAMES`` with its receptive field as context on both sides."""
    assert synth.texture is not None
    frames, ctx = Frames(chunks, lo), synth.texture.context_frames
    z = synth.texture.config.noise_channels
    for s in range(lo, hi, TEXTURE_CHUNK_FRAMES):
        e = min(hi, s + TEXTURE_CHUNK_FRAMES)
        a, b = max(lo, s - ctx), min(hi, e + ctx)
        mel, roll = frames.fetch(a, b)
        if timbre.is_static:
            emb = torch.from_numpy(timbre.vector()[None])
        else:
            emb = torch.from_numpy(timbre.at_frames(a, b - a)[None])
        noise = texture_noise(seed, a, b, z)[None]
        with torch.inference_mode():
            dev = synth.device
            notes = roll[None].to(dev)
            out = synth.texture(mel[None], emb.to(dev), noise.to(dev), strength, notes)[0]
        frames.release(e - ctx)
        yield out[:, s - a : e - a], roll[:, s - a : e - a]


def beats_stream(
    beats: NoteBeats, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], roll: NoteRoll,
    timbre: Timbre, lo: int, strength: float, seed: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """``chunks`` (frames from ``lo`` on) with the beats of the notes near each one
    (:meth:`NoteBeats.apply`: a function of the notes and the frame, so exact chunk by chunk)."""
    a = lo
    for mel, part in chunks:
        b = a + mel.shape[1]
        emb = timbre.vector() if timbre.is_static else timbre.at_frames(a, b - a)
        notes = roll.notes_near(a, b, beats.hold)
        emb_t = torch.from_numpy(np.ascontiguousarray(emb))
        with torch.inference_mode():
            out = beats.apply(mel, notes, a, emb_t.to(mel.device), strength=strength, seed=seed)
        yield out, part
        a = b


class Frames:
    """A sliding window over a stream of ``(mel, roll)`` chunks that begins at frame ``start``."""

    def __init__(self, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], start: int) -> None:
        self._chunks = iter(chunks)
        self._pieces: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.hi = start

    def fetch(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``[a, b)``: ``(Tensor[N_MELS x (b-a)], Tensor[ROLL_CHANNELS x (b-a)])``."""
        while self.hi < b:
            mel, roll = next(self._chunks)
            self._pieces.append((self.hi, mel, roll))
            self.hi += mel.shape[1]
        parts = [(s, m, r) for s, m, r in self._pieces if s < b and s + m.shape[1] > a]
        s0 = parts[0][0]
        mel = torch.cat([m for _, m, _ in parts], dim=1)[:, a - s0 : b - s0]
        roll = torch.cat([r for _, _, r in parts], dim=1)[:, a - s0 : b - s0]
        return mel, roll

    def release(self, a: int) -> None:
        """Forget the frames before ``a``."""
        self._pieces = [p for p in self._pieces if p[0] + p[1].shape[1] > a]


def vocode_frames(voc: Vocoder, frames: Frames, lo: int, hi: int) -> Iterator[np.ndarray]:
    """Stream frames ``[lo, hi)`` through ``voc``, one array per ``VOCODER_CHUNK_FRAMES`` grid
    cell (``WAVENET_CHUNK_FRAMES`` for WaveNet), so parts rendered alike line up."""
    if isinstance(voc, FastVocoder) and voc.config.integrate_phase:
        return voc.stream_frames(frames.fetch, lo, hi, VOCODER_CHUNK_FRAMES, frames.release)
    if voc.kind == "wavenet":
        return vocode_windows(
            voc, frames.fetch, lo, hi, WAVENET_CHUNK_FRAMES,
            WAVENET_WARMUP_FRAMES, WAVENET_CROSSFADE_FRAMES, "linear", frames.release,
        )  # fmt: skip
    return vocode_windows(
        voc, frames.fetch, lo, hi, VOCODER_CHUNK_FRAMES, voc.stream_context_frames,
        voc.stream_crossfade_frames, voc.stream_crossfade_shape, frames.release,
    )  # fmt: skip


def apply_gain(
    chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], log_gain: torch.Tensor, lo: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Add the channel-volume gain (frames from ``lo`` on) to each mel chunk, floored at
    silence."""
    a = lo
    for mel, roll in chunks:
        b = a + mel.shape[1]
        gain = log_gain[a:b].to(mel)
        yield torch.clamp_min(mel + gain, C.LOG_SILENCE), roll
        a = b
