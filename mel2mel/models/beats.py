"""Note beats: the slow phasing of an instrument built from detuned layers, put back.

Many sample-based instruments play every note as two copies of a waveform tuned a few cents
apart (a synth lead, a string or organ patch). Each harmonic ``h`` of a key at ``f0`` Hz then
beats at ``h * f0 * detune`` Hz: FluidSynth's Synth Lead (MuseScore General, program 80) holds
a C4 with its fundamental beating at 0.31 Hz, its third harmonic at 0.92 Hz, its eighth at
2.4 Hz, each dipping 20-30 dB once a period (a detune of 2 cents, the same at every key;
docs/MODELS.md, "Note beats"). Mel2Mel regresses the mel on the notes with a squared error, so
it draws the mean of that phasing, a steady tone, and the instrument classifier takes the steady
synth lead for a trumpet.

:class:`NoteBeats` draws the phasing back into the mel. For every note sounding in a window
(and ``hold`` frames of its release), every harmonic ``h`` below Nyquist gets the power
envelope of two layers of relative level ``d``::

    m(t) = (1 + d^2 + 2 d cos(2 pi h f0 detune (t - onset) + phase)) / (1 + d^2)

(mean 1: the mel keeps its level on average), where ``d`` grows from 0 at the onset to the
instrument's ``depth`` over :data:`ATTACK_FRAMES` (0.3 s): FluidSynth's attacks start with the
layers in step, 1-9 dB above the held level, where the beats measured on the held part (from 0.3 s
on) would put deep dips and the transcriber would miss the notes. FluidSynth plays a key's
beats the same way at every strike and velocity (the level envelopes of two strikes of one key
correlate 0.98-1.0), so ``phase`` is measured per key and harmonic with the detune and depth
(``phases``), and a mix or a coordinate takes those of the nearest instrument that has them (a
table built without them draws each note's phases from a hash of a seed). Each mel bin's power
is multiplied by the mean of the envelopes of the harmonics its filter passes, weighed by the
filter and by their power, ``(velocity^2 / h)^2``; bins no harmonic reaches are left as they
are.

Some instruments pulse instead at one rate for every key: a **tremolo**, the SoundFont's
low-frequency oscillator on the volume, started at each note-on. FluidSynth's Vibraphone
(MuseScore General) swings every held note's level by 2.2-2.5 dB at 4.2-4.4 Hz, in the same
phase at every key, start time and velocity (onset-aligned envelopes correlate 0.88-0.99), and the
squared error draws a steady tone, so the classifier hears a guitar or a harp. Such an
instrument has a ``tremolo`` rate in Hz: harmonic ``h`` then moves at ``h f0 detune +
tremolo`` Hz (one of the two is 0 for a measured instrument; a mix between two gets some of
each), with the same envelope, depth and measured phases. ``detune``, ``tremolo`` and
``depth`` are measured per instrument on FluidSynth's own renders of held notes
(:mod:`mel2mel.evaluation.note_beats`: no gradient, no tuning); an instrument whose held notes
neither beat nor pulse that way gets depth 0. Mixes, coordinates and learned timbres get their
neighbours' values by Shepard's blend. Each frame depends only on the notes and the frame index,
so chunked and streamed renders equal whole ones. Stored in the acoustic export's JSON
(``"note_beats"``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel.audio import floor_log_mel, mel_filterbank
from mel2mel.models.blend import freeze_anchored, shepard_blend
from mel2mel.vocoders.partials import PARTIAL_HOLD, key_frequencies

MAX_HARMONIC = 32  # harmonics above this one fall in wide bands where beats average out
MAX_DEPTH = 0.95
ATTACK_FRAMES = 38  # 0.3 s: the beats grow from nothing at the onset to their depth by then
BLOCK_FRAMES = 128  # frames computed together, with only the notes that sound in them


@dataclass(frozen=True)
class BeatNotes:
    """The notes a window needs: onset and end frames (int64[N]), key index 0..87 (int64[N]),
    velocity / 127 (float32[N])."""

    on: np.ndarray
    off: np.ndarray
    key: np.ndarray
    vel: np.ndarray

    def __len__(self) -> int:
        return len(self.on)

    @classmethod
    def from_roll(cls, roll: np.ndarray) -> BeatNotes:
        """The notes of a roll ``float32[ROLL_CHANNELS x T]`` (a dataset item's): each onset
        mark starts a note of its velocity that lasts while its key sounds, up to the key's
        next onset."""
        sounding, onsets = roll[: C.N_KEYS] > 0, roll[C.N_KEYS : 2 * C.N_KEYS]
        on, off, key, vel = [], [], [], []
        for k, f in zip(*np.nonzero(onsets > 0), strict=True):
            rest = sounding[k, f + 1 :]
            later = np.nonzero(~rest | (onsets[k, f + 1 :] > 0))[0]
            on.append(f)
            off.append(f + 1 + (int(later[0]) if len(later) else len(rest)))
            key.append(k)
            vel.append(onsets[k, f])
        order = np.argsort(np.array(on, dtype=np.int64), kind="stable")
        return cls(
            np.array(on, dtype=np.int64)[order], np.array(off, dtype=np.int64)[order],
            np.array(key, dtype=np.int64)[order], np.array(vel, dtype=np.float32)[order],
        )  # fmt: skip


@functools.cache
def _harmonic_weights() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every key and harmonic 1..MAX_HARMONIC: its frequency (Hz, Tensor[K x H] float64,
    0 past Nyquist) and the mel filterbank's weight of it (Tensor[K x H x N_MELS]), and the
    harmonic numbers (Tensor[H])."""
    h = torch.arange(1, MAX_HARMONIC + 1, dtype=torch.float64)
    freq = key_frequencies()[:, None] * h[None]  # K x H
    fb = torch.from_numpy(mel_filterbank()).double()  # M x F
    bins = torch.round(freq / (C.SAMPLE_RATE / C.N_FFT)).long()
    below = bins < fb.shape[1] - 1
    weights = fb[:, bins.clamp(max=fb.shape[1] - 1)].permute(1, 2, 0) * below[..., None]
    return torch.where(below, freq, 0.0), weights, h


def _fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer on uint64 arrays holding uint32 values."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def hashed_phases(seed: int, notes: BeatNotes) -> np.ndarray:
    """float64[N x MAX_HARMONIC] phases in [0, 2 pi), a hash of the seed and each note's key,
    onset frame and harmonic (so every window that sees a note draws the same phases, and the
    in-page engine draws them bit for bit: ``static/inpage/beats.js``)."""
    m = 0xFFFFFFFF
    h = np.arange(1, MAX_HARMONIC + 1, dtype=np.uint64)[None]
    key = notes.key.astype(np.uint64)[:, None]
    on = (notes.on.astype(np.int64) & m).astype(np.uint64)[:, None]
    x = ((int(seed) & m) * 0x9E3779B1 & m) + key * 0x85EBCA77 + on * 0xC2B2AE3D + h * 0x27D4EB2F
    return _fmix32(x & m).astype(np.float64) * (2 * math.pi / 2**32)


@dataclass(frozen=True)
class NoteBeats:
    """The detune and depth of each instrument's layers (see the module's docstring).

    Parameters
    ----------
    names:
        The instruments (the acoustic model's, in its table's order).
    embeddings:
        Their embeddings, N rows of E floats: the anchors of :func:`shepard_blend`.
    detune:
        N frequency ratios between the layers minus 1 (2 cents: 0.00116).
    depth:
        N levels of the second layer relative to the first, in [0, MAX_DEPTH] (0: no beats).
    phases:
        Per instrument, an empty tuple or N_KEYS rows of MAX_HARMONIC phases (radians) of its
        beats at the onset, as measured; empty: drawn from the seed.
    hold:
        Frames a note keeps beating after it ends (its release).
    attack:
        Frames over which a note's beats grow from nothing to their depth.
    tremolo:
        N rates (Hz, >= 0) at which every harmonic of every key moves besides ``h f0 detune``
        (a tremolo; 0: none). Empty: 0 for every instrument.
    """

    names: tuple[str, ...]
    embeddings: tuple[tuple[float, ...], ...]
    detune: tuple[float, ...]
    depth: tuple[float, ...]
    phases: tuple[tuple[tuple[float, ...], ...], ...] = ()
    hold: int = PARTIAL_HOLD
    attack: int = ATTACK_FRAMES
    tremolo: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.names)
        if not self.tremolo:
            object.__setattr__(self, "tremolo", (0.0,) * n)
        freeze_anchored(self, "NoteBeats", values=("detune", "depth", "tremolo"))
        phases = tuple(tuple(tuple(float(x) for x in r) for r in t) for t in self.phases)
        object.__setattr__(self, "phases", phases or ((),) * n)
        if any(t and (len(t) != C.N_KEYS or {len(r) for r in t} != {MAX_HARMONIC}) for t in phases):
            raise ValueError(f"NoteBeats: phases are {C.N_KEYS} rows of {MAX_HARMONIC}, or none")
        if len(self.phases) != n:
            raise ValueError("NoteBeats: one phase table (or an empty one) per name")
        if min(self.detune) < 0 or min(self.tremolo) < 0:
            raise ValueError("NoteBeats: detune and tremolo must be >= 0")
        if not all(0 <= d <= MAX_DEPTH for d in self.depth):
            raise ValueError(f"NoteBeats: depth must be in [0, {MAX_DEPTH}]")
        if self.hold < 0 or self.attack < 1:
            raise ValueError("NoteBeats: hold must be >= 0 and attack >= 1")

    @functools.cached_property
    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.detune, self.depth, self.tremolo]
        values = torch.tensor(rows, dtype=torch.float64).T  # N x 3
        return torch.tensor(self.embeddings, dtype=torch.float64), values

    def at(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(detune, depth, tremolo)`` at ``embedding`` Tensor[E] or Tensor[E x T], each
        Tensor[1] or Tensor[T] float64."""
        values = shepard_blend(embedding.double()[None], *self._tables)[0]  # 3 x (1 or T)
        return values[0], values[1], values[2]

    def note_phases(self, embedding: torch.Tensor, notes: BeatNotes, seed: int) -> np.ndarray:
        """float64[N x MAX_HARMONIC]: the measured phases of the instrument nearest
        ``embedding`` (Tensor[E] or Tensor[E x T], its mean) among those that have them, or
        :func:`hashed_phases` of the seed when none has."""
        measured = self._phase_tables
        if not measured:
            return hashed_phases(seed, notes)
        rows = list(measured)
        e = embedding.double().reshape(embedding.shape[0], -1).mean(dim=1)
        nearest = rows[int(torch.cdist(e[None], self._tables[0][rows])[0].argmin())]
        return measured[nearest][notes.key]

    @functools.cached_property
    def _phase_tables(self) -> dict[int, np.ndarray]:
        """The measured phase tables as float64[N_KEYS x MAX_HARMONIC] arrays, by instrument
        row (made once: every window reads one)."""
        return {k: np.asarray(t, dtype=np.float64) for k, t in enumerate(self.phases) if t}

    def beats_anywhere(self) -> bool:
        """Whether any instrument beats (otherwise :meth:`apply` returns its input)."""
        return max(self.depth) > 0

    def apply(
        self,
        mel: torch.Tensor,
        notes: BeatNotes,
        start: int,
        embedding: torch.Tensor,
        *,
        strength: float = 1.0,
        seed: int = 0,
    ) -> torch.Tensor:
        """``mel`` Tensor[N_MELS x T] (frames ``start .. start + T - 1`` of a piece) with the
        beats of ``notes`` (those sounding in, or ending at most :attr:`hold` frames before,
        the window; frames of the piece) at ``embedding`` (Tensor[E], or Tensor[E x T] for a
        timbre that moves); ``strength`` scales the log-power change (0: ``mel`` itself).
        Floored at the analysis floor."""
        if strength == 0 or len(notes) == 0 or not self.beats_anywhere():
            return mel
        detune, depth, tremolo = self.at(embedding)
        if float(depth.max()) <= 0:
            return mel
        freq, weights, h = _harmonic_weights()
        key = torch.from_numpy(notes.key)
        f = freq[key]  # N x H: 0 past Nyquist
        amp = torch.from_numpy(notes.vel).double()[:, None] ** 2 / h * (f > 0)  # N x H
        w = weights[key] * (amp**2)[..., None]  # N x H x M: each harmonic weighs as its power
        phase = torch.from_numpy(self.note_phases(embedding, notes, seed))  # N x H
        ends = notes.off + self.hold
        frames = mel.shape[1]
        total = torch.zeros(w.shape[2], frames, dtype=torch.float64)  # M x T
        beating = torch.zeros_like(total)
        for a in range(0, frames, BLOCK_FRAMES):  # each block with the notes it hears only
            b = min(frames, a + BLOCK_FRAMES)
            sel = torch.from_numpy(np.nonzero((notes.on < start + b) & (ends > start + a))[0])
            if len(sel) == 0:
                continue
            t = torch.arange(start + a, start + b, dtype=torch.float64)  # t
            since = t - torch.from_numpy(notes.on)[sel].double()[:, None, None]  # n x 1 x t
            live = ((since >= 0) & (t < torch.from_numpy(ends)[sel][:, None, None])).double()
            c, r, v = (x if x.numel() == 1 else x[a:b] for x in (detune, depth, tremolo))
            hz = f[sel][..., None] * c + v * (f[sel][..., None] > 0)  # n x H x (1 or t)
            angle = 2 * math.pi * hz * since / C.FRAME_RATE
            d = r * (since / self.attack).clamp(0.0, 1.0)  # n x 1 x t: grown from 0
            envelope = 1 + 2 * d * torch.cos(angle + phase[sel][..., None]) / (1 + d**2)
            total[:, a:b] = w[sel].sum(1).T @ live[:, 0]
            beating[:, a:b] = w[sel].flatten(0, 1).T @ (live * envelope).flatten(0, 1)
        factor = torch.where(total > 0, beating / total.clamp_min(1e-30), 1.0)
        change = 0.5 * strength * torch.log(factor.clamp_min(1e-6))  # log magnitude
        return floor_log_mel(mel + change.to(mel.dtype))

    def to_dict(self) -> dict[str, Any]:
        """``{"hold", "attack", "instruments": [{"name", "embedding", "detune", "depth"[,
        "tremolo"][, "phases"]}]}``, as the acoustic export's JSON stores them (phases to 2
        decimals, 0 where unmeasured; "tremolo" only where it is not 0)."""
        rows = []
        for k, (n, e) in enumerate(zip(self.names, self.embeddings, strict=True)):
            row = {"name": n, "embedding": list(e), "detune": self.detune[k]}
            rows.append(row | {"depth": round(self.depth[k], 4)})
            if self.tremolo[k]:
                rows[-1]["tremolo"] = round(self.tremolo[k], 4)
            if self.phases[k]:
                rows[-1]["phases"] = [[round(x, 2) or 0 for x in r] for r in self.phases[k]]
        return {"hold": self.hold, "attack": self.attack, "instruments": rows}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> NoteBeats:
        rows: Sequence[dict[str, Any]] = doc["instruments"]
        return cls(
            tuple(r["name"] for r in rows),
            tuple(r["embedding"] for r in rows),
            tuple(r["detune"] for r in rows),
            tuple(r["depth"] for r in rows),
            tuple(r.get("phases", ()) for r in rows),
            int(doc.get("hold", PARTIAL_HOLD)),
            int(doc.get("attack", ATTACK_FRAMES)),
            tuple(r.get("tremolo", 0.0) for r in rows),
        )
