"""The public inference API: MIDI + timbre -> 16 kHz audio, for pieces of any length.

Usage::

    from mel2mel import Synthesizer

    synth = Synthesizer.from_pretrained()                    # shipped models, CPU
    audio = synth.render("song.mid", timbre="trumpet")       # float32[N], 16 kHz
    audio = synth.render("song.mid", timbre="trumpet=0.3,vibes=0.7", tracks={2: "organ"})
    for chunk in synth.stream("long.mid", timbre="piano@0s,organ@600s"):
        ...                                                  # bounded memory, any length
    mel = synth.mel("song.mid", timbre=[0.1, -0.4])          # float32[80 x T] log-mel

Timbre specifications are described in :mod:`mel2mel.timbre`. How a render runs:

1. The notes are read once (:func:`mel2mel.midi.read_notes`); the piano roll is never built
   whole (176 x 900,000 float32 is 630 MB for two hours): :class:`NoteRoll` builds the roll of
   any run of frames from the note list.
2. The acoustic model runs on windows: a core of ``chunk_frames`` frames with
   ``context_frames`` frames of real context on each side (or the true start/end of the
   piece), ``batch_windows`` windows per call (a batch reuses each read of the LSTM weights,
   about 1.5x faster per frame on CPU). Consecutive cores overlap by ``crossfade_frames``
   frames, cross-faded linearly in the log domain. A piece that fits in one window
   (``exact_frames`` = 4016 frames, 32 s, by default) runs through the whole BiLSTM at once,
   exactly.
3. The texture post-net, when the model has one (:mod:`mel2mel.models.texture`), adds the
   frame-to-frame texture a squared-error model averages out, on chunks of
   ``TEXTURE_CHUNK_FRAMES`` with its receptive field as context; its noise is a function of
   the frame and the seed, so a render is reproducible and chunking does not change it.
4. The vocoder consumes the mel as it arrives, with its own context (the fast vocoder carries
   its running phase and reproduces its one-pass output; Griffin-Lim and WaveNet overlap and
   cross-fade chunks as their own ``vocode_stream`` / batched generation do).
5. Per-track timbres: each part is rendered separately through the acoustic model *and* the
   vocoder and the audio is summed. Audio adds exactly, while magnitudes of a sum do not
   (overlapping partials interfere), and each vocoder input stays a single-instrument mel with
   its own notes, as in training. The vocoder runs once per part.

The output holds ``HOP_LENGTH`` samples per frame; the frames run from the start of the piece
to its last note end plus ``tail`` seconds (default 1 s) for the release and reverb.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.errors import UserError
from mel2mel.midi import MidiSource, Note, NoteSequence, log_gain, read_notes, time_to_frame
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.io import export_paths, load_acoustic
from mel2mel.models.texture import TexturePostnet, load_texture, texture_noise
from mel2mel.timbre import InstrumentInfo, Timbre, TimbreSpace, TimbreSpec, parse_time
from mel2mel.validate import AudioCheck
from mel2mel.vocoders import io as vocoder_io
from mel2mel.vocoders.base import Vocoder, crossfade_curves
from mel2mel.vocoders.fast import FastVocoder
from mel2mel.vocoders.griffinlim import GriffinLim

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
TAIL_SECONDS = 1.0
PREROLL_FRAMES = 32  # vocoded before --start and dropped, so the vocoder has left context
VOCODER_CHUNK_FRAMES = 1000
TEXTURE_CHUNK_FRAMES = 2000
WAVENET_CHUNK_FRAMES = 2000  # batched generation splits each chunk into parallel streams
WAVENET_WARMUP_FRAMES, WAVENET_CROSSFADE_FRAMES = 4, 2  # as generate_batched's seams

PROGRESS_FORMAT = "{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]"

_warned_griffinlim = False


class NoteRoll:
    """The onset/frame roll of a note list, built window by window.

    ``window(lo, hi)`` equals ``mel2mel.midi.piano_roll(notes, num_frames)[:, lo:hi]``.

    Parameters
    ----------
    notes:
        The notes (any order).
    num_frames:
        Frames of the whole roll; notes are cut there.
    log_gain:
        ``float32[num_frames]``: the channel volume/expression gain of these notes
        (:func:`mel2mel.midi.log_gain`), added to their log-mel; ``None`` for none.
    """

    def __init__(
        self, notes: Sequence[Note], num_frames: int, log_gain: np.ndarray | None = None
    ) -> None:
        self.log_gain = None if log_gain is None else torch.from_numpy(log_gain)
        ordered = sorted(notes, key=lambda n: n.start)  # piano_roll's write order
        on = np.array([time_to_frame(n.start) for n in ordered], dtype=np.int64)
        end = np.array([time_to_frame(n.end) for n in ordered], dtype=np.int64)
        keep = on < num_frames
        self.num_frames = num_frames
        self.on = on[keep]
        self.off = np.minimum(np.maximum(end[keep], self.on + 1), num_frames)
        self.key = np.array([n.pitch - C.MIDI_MIN for n in ordered], dtype=np.int64)[keep]
        self.vel = np.array([n.velocity / 127.0 for n in ordered], dtype=np.float32)[keep]
        self.longest = int((self.off - self.on).max()) if len(self.on) else 0

    def window(self, lo: int, hi: int) -> np.ndarray:
        """Frames ``lo .. hi - 1`` of the roll, ``float32[ROLL_CHANNELS x (hi - lo)]``."""
        roll = np.zeros((C.ROLL_CHANNELS, hi - lo), dtype=np.float32)
        first = int(np.searchsorted(self.on, lo - self.longest, side="left"))
        last = int(np.searchsorted(self.on, hi, side="left"))
        sl = slice(first, last)
        cols = (self.on[sl], self.off[sl], self.key[sl], self.vel[sl])
        for on, off, k, v in zip(*(c.tolist() for c in cols), strict=True):
            if off <= lo:
                continue
            roll[k, max(on, lo) - lo : min(off, hi) - lo] = v
            if on >= lo:
                roll[C.N_KEYS + k, on - lo] = v
        return roll


def split_parts(seq: NoteSequence) -> tuple[str, dict[int, list[Note]]]:
    """The parts of a piece, ``("track", {track: notes})``, or by channel when every note is in
    one track (type-0 files, or type-1 files with a single note track)."""
    by_track: dict[int, list[Note]] = {}
    for n in seq.notes:
        by_track.setdefault(n.track, []).append(n)
    if len(by_track) > 1:
        return "track", by_track
    by_channel: dict[int, list[Note]] = {}
    for n in seq.notes:
        by_channel.setdefault(n.channel, []).append(n)
    return "channel", by_channel


class MelStream(NamedTuple):
    """A piece's log-mel as it is made: see :meth:`Synthesizer.mel_stream`."""

    num_frames: int
    chunks: Iterator[np.ndarray]


@dataclass
class _Plan:
    """A checked render request: timbre groups and the frame range ``[first, stop)``."""

    groups: list[tuple[NoteRoll, Timbre]]
    total: int
    first: int
    stop: int
    texture: float


class _Frames:
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


def _generic_stream(
    voc: Vocoder, frames: _Frames, lo: int, hi: int, chunk: int, ctx: int, xf: int, shape: str
) -> Iterator[np.ndarray]:
    """:meth:`Vocoder.vocode_stream` of frames ``[lo, hi)`` of a mel arriving in pieces."""
    hop, tail = C.HOP_LENGTH, None
    for start in range(lo, hi, chunk):
        end = min(hi, start + chunk)
        out_end = min(hi, end + xf)
        a, b = max(lo, start - ctx), min(hi, out_end + ctx)
        mel, roll = frames.fetch(a, b)
        audio = voc.vocode(mel[None], roll[None] if voc.uses_roll else None)[0]
        y = audio[(start - a) * hop : (out_end - a) * hop].float().cpu().numpy().copy()
        if tail is not None:
            fade_out, fade_in = crossfade_curves(len(tail), shape)
            y[: len(tail)] = tail * fade_out + y[: len(tail)] * fade_in
        keep = (end - start) * hop
        tail = y[keep:].copy() if out_end > end else None
        frames.release(end - ctx)
        yield np.ascontiguousarray(y[:keep])


def vocode_frames(voc: Vocoder, frames: _Frames, lo: int, hi: int) -> Iterator[np.ndarray]:
    """Stream frames ``[lo, hi)`` through ``voc``, one array per ``VOCODER_CHUNK_FRAMES`` grid
    cell (``WAVENET_CHUNK_FRAMES`` for WaveNet), so parts rendered alike line up."""
    if isinstance(voc, FastVocoder) and voc.config.integrate_phase:
        return voc.stream_frames(frames.fetch, lo, hi, VOCODER_CHUNK_FRAMES, frames.release)
    if voc.kind == "wavenet":
        return _generic_stream(
            voc, frames, lo, hi, WAVENET_CHUNK_FRAMES,
            WAVENET_WARMUP_FRAMES, WAVENET_CROSSFADE_FRAMES, "linear",
        )  # fmt: skip
    return _generic_stream(
        voc, frames, lo, hi, VOCODER_CHUNK_FRAMES,
        voc.stream_context_frames, voc.stream_crossfade_frames, voc.stream_crossfade_shape,
    )  # fmt: skip


def _apply_gain(
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


def _check_strength(value: float) -> float:
    strength = float(value)
    if not 0.0 <= strength <= 4.0:
        raise UserError(f"texture strength must be between 0 and 4, got {value}")
    return strength


def _library(spec: Any) -> Any:
    """The :class:`TimbreLibrary` of a ``timbre_library`` argument (``False``: none)."""
    from mel2mel.timbre_library import TimbreLibrary

    if spec is False:
        return None
    return spec if isinstance(spec, TimbreLibrary) else TimbreLibrary(spec)


class Synthesizer:
    """MIDI + timbre -> audio, with an acoustic model and a vocoder.

    Parameters
    ----------
    acoustic:
        The :class:`~mel2mel.models.Mel2Mel` acoustic model.
    vocoder:
        A :class:`~mel2mel.vocoders.base.Vocoder`, a kind (``"auto"``, ``"fast"``,
        ``"wavenet"``, ``"griffinlim"``) or the path of an exported vocoder; ``"auto"`` is
        the fast vocoder when its weights are found, else Griffin-Lim (with a warning).
    device:
        Where the models run.
    model_dir:
        Folder searched first for exported vocoders (``fast_vocoder.*``, ``wavenet.*``)
        before the shipped ones.
    chunk_frames, context_frames, crossfade_frames, batch_windows:
        Acoustic windows (module docstring): core frames, context on each side, overlap of
        consecutive cores, windows per forward call. Pieces of up to one window
        (``chunk_frames + crossfade_frames + 2 * context_frames`` frames) run exactly.
    timbre_library:
        Where timbre names that are not instruments are looked up (lazily): ``None`` for the
        default :class:`~mel2mel.timbre_library.TimbreLibrary`, a library or its folder, or
        ``False`` for none.
    texture:
        The :class:`~mel2mel.models.texture.TexturePostnet` trained on ``acoustic``'s
        predictions, or ``None`` to vocode the acoustic model's mel as it is.
    texture_strength:
        Default scale of the added texture (``render(texture=...)`` overrides it; 0: none);
        ``None``: the post-net's own ``default_strength`` (chosen when it was exported).
    seed:
        Seed of the texture's noise (part ``k`` of a per-track render uses ``seed + k``).
    """

    sample_rate: int = C.SAMPLE_RATE

    def __init__(
        self,
        acoustic: Mel2Mel,
        vocoder: Vocoder | str | None = "auto",
        *,
        device: str | torch.device = "cpu",
        model_dir: str | Path | None = None,
        chunk_frames: int = 3000,
        context_frames: int = 500,
        crossfade_frames: int = 16,
        batch_windows: int = 4,
        timbre_library: Any = None,
        texture: TexturePostnet | None = None,
        texture_strength: float | None = None,
        seed: int = 0,
    ) -> None:
        if min(chunk_frames, batch_windows) < 1 or min(context_frames, crossfade_frames) < 0:
            raise ValueError("chunk_frames and batch_windows must be >= 1, the others >= 0")
        if texture is not None and texture.config.embedding_dim != acoustic.embedding_dim:
            raise ValueError("the texture post-net's embedding size differs from the model's")
        if crossfade_frames > context_frames:
            raise ValueError("crossfade_frames cannot exceed context_frames")
        self.device = torch.device(device)
        self.acoustic = acoustic.to(self.device).eval()
        self.texture = None if texture is None else texture.to(self.device).eval()
        if texture_strength is None:
            texture_strength = 1.0 if texture is None else texture.default_strength
        self.texture_strength = _check_strength(texture_strength)
        self.seed = int(seed)
        self.timbres = TimbreSpace.from_model(acoustic, library=_library(timbre_library))
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.chunk_frames, self.context_frames = chunk_frames, context_frames
        self.crossfade_frames, self.batch_windows = crossfade_frames, batch_windows
        # A piece that fits in one window runs through the whole BiLSTM, exactly. Longer ones
        # are windowed even when one sequence would fit in memory: a batch of windows costs
        # ~10% less CPU than one 60 s sequence despite its context (measured, 1 thread).
        self.exact_frames = chunk_frames + crossfade_frames + 2 * context_frames
        self._vocoders: dict[str, Vocoder] = {}
        self.vocoder = self.load_vocoder("auto" if vocoder is None else vocoder)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        vocoder: Vocoder | str = "auto",
        device: str | torch.device = "cpu",
        texture: bool = True,
        **kwargs: Any,
    ) -> Synthesizer:
        """Load the shipped models, or a user's export.

        Parameters
        ----------
        path:
            ``None`` for ``mel2mel/pretrained``; else a folder holding ``acoustic.json`` +
            ``acoustic.safetensors`` (and optionally ``acoustic_texture.*``,
            ``fast_vocoder.*`` / ``wavenet.*``), or the prefix or either file of an acoustic
            export (whose texture post-net is ``<prefix>_texture.*``).
        texture:
            Load the acoustic model's texture post-net if it has one (``False``: never).
        vocoder, device, kwargs:
            As in :class:`Synthesizer`.

        Raises
        ------
        UserError
            If no acoustic model is found there.
        """
        where = PRETRAINED_DIR if path is None else Path(path)
        desc = export_paths(where)[1]
        if not desc.is_file():
            if path is None:
                raise UserError(
                    f"no pretrained acoustic model is installed in {PRETRAINED_DIR}; pass the "
                    "path of an export from 'mel2mel export acoustic' (--model PATH)"
                )
            raise UserError(f"no exported acoustic model at {path} (looked for {desc})")
        model = load_acoustic(where, device=device)
        weights = export_paths(where)[0]
        post = load_texture(desc.with_suffix(""), weights, device) if texture else None
        return cls(model, vocoder, device=device, model_dir=desc.parent, texture=post, **kwargs)

    # -- parts ----------------------------------------------------------------------------

    def load_vocoder(self, spec: Vocoder | str | Path) -> Vocoder:
        """A vocoder by kind or path (cached), or ``spec`` itself moved to the device."""
        global _warned_griffinlim
        if isinstance(spec, Vocoder):
            return spec.to(self.device).eval()
        key = str(spec)
        if key in self._vocoders:
            return self._vocoders[key]
        if key == "griffinlim":
            voc: Vocoder = GriffinLim()
        elif key in ("auto", "fast", "wavenet"):
            found = self._find_vocoder("fast" if key == "auto" else key)
            if found is not None:
                voc = found
            elif key == "auto":
                if not _warned_griffinlim:
                    warnings.warn(
                        "no fast vocoder weights are installed "
                        f"({vocoder_io.pretrained_path('fast')}.*); using Griffin-Lim, "
                        "which sounds much rougher",
                        stacklevel=3,
                    )
                    _warned_griffinlim = True
                voc = GriffinLim()
            else:
                voc = vocoder_io.load_pretrained(key)  # raises a UserError that explains
        elif Path(key).with_suffix(".json").is_file():
            voc = vocoder_io.load_vocoder(key)
        else:
            raise UserError(
                f"unknown vocoder {key!r}; use auto, fast, wavenet, griffinlim or the path of "
                "an exported vocoder"
            )
        self._vocoders[key] = voc = voc.to(self.device).eval()
        return voc

    def _find_vocoder(self, kind: str) -> Vocoder | None:
        stems = [vocoder_io.pretrained_path(kind)]
        if self.model_dir is not None:
            stems.insert(0, self.model_dir / vocoder_io.PRETRAINED_STEMS[kind])
        for stem in stems:
            if stem.with_suffix(".json").is_file() and stem.with_suffix(".safetensors").is_file():
                return vocoder_io.load_vocoder(stem, self.device)
        return None

    def instruments(self) -> list[InstrumentInfo]:
        """The trained instruments: names, GM programs, embedding coordinates, aliases."""
        return self.timbres.describe()

    def timbre(self, spec: TimbreSpec | None = None) -> Timbre:
        """Resolve a timbre specification (see :mod:`mel2mel.timbre`); ``None``: instrument 0."""
        return self.timbres.resolve(spec)

    # -- rendering --------------------------------------------------------------------------

    def _plan(
        self,
        midi: MidiSource | NoteSequence,
        timbre: TimbreSpec | None,
        tracks: Mapping[int, TimbreSpec] | None,
        start: float | str | None,
        duration: float | str | None,
        tail: float | str,
        texture: float | None = None,
    ) -> _Plan:
        """Read and check everything before any audio is made (errors come first)."""
        seq = midi if isinstance(midi, NoteSequence) else read_notes(midi)
        main = self.timbres.resolve(timbre)
        total = seq.num_frames() + round(parse_time(tail) * C.FRAME_RATE)
        begin = 0.0 if start is None else parse_time(start)
        first = time_to_frame(begin)
        if first >= total:
            raise UserError(
                f"start {start} is past the end of the piece ({total / C.FRAME_RATE:.2f} s)"
            )
        stop = total
        if duration is not None:
            seconds = parse_time(duration)
            if seconds <= 0:
                raise UserError("duration must be positive")
            stop = min(total, max(first + 1, time_to_frame(begin + seconds)))
        groups: list[tuple[Sequence[Note], Timbre]] = [(seq.notes, main)]
        if tracks:
            kind, parts = split_parts(seq)
            chosen: dict[int, Timbre] = {}
            for key, spec in tracks.items():
                k = int(key) if str(key).strip().isdigit() else -1
                if k not in parts:
                    have = ", ".join(f"{p} ({len(n)} notes)" for p, n in sorted(parts.items()))
                    raise UserError(f"{kind} {key!r} has no notes; {kind}s with notes: {have}")
                chosen[k] = self.timbres.resolve(spec)
            rest = [n for p, notes in parts.items() if p not in chosen for n in notes]
            groups = [(rest, main)] if rest else []
            groups += [(parts[k], t) for k, t in sorted(chosen.items())]
        strength = self.texture_strength if texture is None else _check_strength(texture)
        rolls = [(NoteRoll(n, total, log_gain(n, seq.volume, total)), t) for n, t in groups]
        return _Plan(rolls, total, first, stop, strength)

    def _mel_stream(
        self, roll: NoteRoll, timbre: Timbre, lo: int, hi: int, strength: float, seed: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The log-mel of frames ``[lo, hi)`` in consecutive pieces: the acoustic model's,
        with texture of ``strength`` from noise seeded by ``seed`` when there is a post-net.

        Yields
        ------
        ``(Tensor[N_MELS x n], Tensor[ROLL_CHANNELS x n])``: the mel and roll of the next
        ``n`` frames, on the device.
        """
        chunks = self._acoustic_stream(roll, timbre, lo, hi)
        if self.texture is not None and strength != 0:
            chunks = self._texture_stream(chunks, timbre, lo, hi, strength, seed)
        if roll.log_gain is None:
            return chunks
        return _apply_gain(chunks, roll.log_gain, lo)

    def _texture_stream(
        self, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], timbre: Timbre, lo: int,
        hi: int, strength: float, seed: int,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
        """``chunks`` (frames ``[lo, hi)``) through the texture post-net, in pieces of
        ``TEXTURE_CHUNK_FRAMES`` with its receptive field as context on both sides."""
        assert self.texture is not None
        frames, ctx = _Frames(chunks, lo), self.texture.context_frames
        z = self.texture.config.noise_channels
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
                dev = self.device
                out = self.texture(mel[None], emb.to(dev), noise.to(dev), strength)[0]
            frames.release(e - ctx)
            yield out[:, s - a : e - a], roll[:, s - a : e - a]

    def _acoustic_stream(
        self, roll: NoteRoll, timbre: Timbre, lo: int, hi: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The acoustic model's log-mel of frames ``[lo, hi)`` in consecutive pieces.

        Yields
        ------
        ``(Tensor[N_MELS x n], Tensor[ROLL_CHANNELS x n])``: the mel and roll of the next
        ``n`` frames, on the device.
        """
        total, ctx, xf = roll.num_frames, self.context_frames, self.crossfade_frames
        if total <= self.exact_frames:
            width, chunk = total, hi - lo  # one window: the exact whole-piece forward
        else:  # the fewest cores of at most chunk_frames, all of (nearly) equal size
            n_cores = -(-(hi - lo) // self.chunk_frames)
            chunk = -(-(hi - lo) // n_cores)
            width = min(total, chunk + xf + 2 * ctx)
        cores = list(range(lo, hi, chunk))
        static = timbre.is_static
        tail: torch.Tensor | None = None
        for i in range(0, len(cores), self.batch_windows):
            group = cores[i : i + self.batch_windows]
            windows = [min(max(s - ctx, 0), total - width) for s in group]
            rolls = torch.from_numpy(np.stack([roll.window(w, w + width) for w in windows]))
            if static:
                emb = torch.from_numpy(timbre.vector()[None]).expand(len(group), -1)
            else:
                emb = torch.from_numpy(np.stack([timbre.at_frames(w, width) for w in windows]))
            rolls, emb = rolls.to(self.device), emb.to(self.device)
            with torch.inference_mode():
                # the same windows, exactly, through the fast path: layers folded into the
                # LSTM, its two directions in parallel threads (mel2mel.models.acoustic_infer)
                out = self.acoustic.infer(rolls, embedding=emb)
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

    def mel_stream(
        self,
        midi: MidiSource | NoteSequence,
        timbre: TimbreSpec | None = None,
        *,
        start: float | str | None = None,
        duration: float | str | None = None,
        tail: float | str = TAIL_SECONDS,
        texture: float | None = None,
    ) -> MelStream:
        """:meth:`mel` in pieces, with bounded memory whatever the length of the piece.

        Everything is checked before this returns. Arguments as in :meth:`mel`.

        Returns
        -------
        :class:`MelStream`: ``num_frames`` (known before any is made) and ``chunks``, an
        iterator of ``float32[N_MELS x n]`` arrays (up to ``chunk_frames`` frames each),
        each checked finite and below full scale, that concatenate to :meth:`mel`'s output.
        """
        plan = self._plan(midi, timbre, None, start, duration, tail, texture)
        roll, t = plan.groups[0]
        stream = self._mel_stream(roll, t, plan.first, plan.stop, plan.texture, self.seed)
        what = "the predicted mel"
        chunks = (validate.check_mel(m.float().cpu().numpy(), what) for m, _ in stream)
        return MelStream(plan.stop - plan.first, chunks)

    def mel(
        self,
        midi: MidiSource | NoteSequence,
        timbre: TimbreSpec | None = None,
        *,
        start: float | str | None = None,
        duration: float | str | None = None,
        tail: float | str = TAIL_SECONDS,
        texture: float | None = None,
    ) -> np.ndarray:
        """The natural-log mel of a piece that the vocoder would get, ``float32[N_MELS x T]``.

        ``T`` covers ``start`` .. ``start + duration`` (default: the whole piece plus
        ``tail`` seconds). Arguments as in :meth:`render`; ``texture=0`` gives the acoustic
        model's own prediction. Channel volume and expression (CC7, CC11) are applied.
        """
        stream = self.mel_stream(
            midi, timbre, start=start, duration=duration, tail=tail, texture=texture
        )
        return np.concatenate(list(stream.chunks), axis=1)

    def stream(
        self,
        midi: MidiSource | NoteSequence,
        timbre: TimbreSpec | None = None,
        *,
        vocoder: Vocoder | str | None = None,
        start: float | str | None = None,
        duration: float | str | None = None,
        tracks: Mapping[int, TimbreSpec] | None = None,
        tail: float | str = TAIL_SECONDS,
        progress: bool = False,
        texture: float | None = None,
    ) -> Iterator[np.ndarray]:
        """Render chunk by chunk with bounded memory, whatever the length of the piece.

        Everything is checked (MIDI, timbres, tracks, range, vocoder) before this returns;
        the returned iterator then makes the audio. Arguments as in :meth:`render`.

        Returns
        -------
        Iterator of ``float32[n]`` arrays (about 8 s each) that concatenate to
        :meth:`render`'s output.
        """
        plan = self._plan(midi, timbre, tracks, start, duration, tail, texture)
        voc = self.vocoder if vocoder is None else self.load_vocoder(vocoder)
        return self._audio(plan, voc, progress)

    def _audio(self, plan: _Plan, voc: Vocoder, progress: bool) -> Iterator[np.ndarray]:
        from tqdm import tqdm

        lo = max(0, plan.first - PREROLL_FRAMES)
        streams = []
        for k, (roll, t) in enumerate(plan.groups):
            mels = self._mel_stream(roll, t, lo, plan.stop, plan.texture, self.seed + k)
            streams.append(vocode_frames(voc, _Frames(mels, lo), lo, plan.stop))
        skip = (plan.first - lo) * C.HOP_LENGTH
        seconds = (plan.stop - plan.first) / C.FRAME_RATE
        check = AudioCheck("the audio")  # never hand out NaN, DC or full-scale noise
        with tqdm(
            total=round(seconds, 2), unit="s", desc="rendering", disable=not progress,
            file=sys.stderr, bar_format=PROGRESS_FORMAT, delay=1.0,
        ) as bar:  # fmt: skip
            for parts in zip(*streams, strict=True):
                y = functools.reduce(np.add, parts)[skip:]
                skip = max(0, skip - len(parts[0]))
                if len(y):
                    bar.update(len(y) / C.SAMPLE_RATE)
                    yield check.check(y.astype(np.float32, copy=False))
            check.finish()

    def render(
        self,
        midi: MidiSource | NoteSequence,
        timbre: TimbreSpec | None = None,
        *,
        vocoder: Vocoder | str | None = None,
        start: float | str | None = None,
        duration: float | str | None = None,
        tracks: Mapping[int, TimbreSpec] | None = None,
        tail: float | str = TAIL_SECONDS,
        progress: bool = False,
        texture: float | None = None,
    ) -> np.ndarray:
        """Synthesize a MIDI file.

        Parameters
        ----------
        midi:
            A path, the bytes of a file, a ``mido.MidiFile`` or a
            :class:`~mel2mel.midi.NoteSequence`. Drum-channel notes and notes outside A0..C8
            are left out (with a warning that counts the latter).
        timbre:
            A name, alias, program, coordinates, mix or morph (:mod:`mel2mel.timbre`);
            ``None``: the model's first instrument.
        vocoder:
            Overrides the synthesizer's vocoder (a :class:`Vocoder`, kind or path).
        start, duration:
            Seconds (or ``"1:30"``-style strings) of the piece to render, on the 8 ms frame
            grid; by default all of it. The models still see the notes around the range.
        tracks:
            ``{part: timbre}``: parts rendered with their own timbre, summed as audio; parts
            are MIDI tracks (0-based, as stored in the file), or channels (0-based) when every
            note is in one track. Parts not listed use ``timbre``.
        tail:
            Seconds rendered after the last note ends (release, reverb).
        progress:
            Show a progress bar on stderr (once a render has taken more than a second).
        texture:
            Scale of the texture post-net's texture, 0 (none) to about 1.5; ``None``: the
            synthesizer's ``texture_strength``. Without a post-net it has no effect.

        Returns
        -------
        float32[HOP_LENGTH * T] audio at 16 kHz, not clipped or normalized.
        """
        chunks = list(
            self.stream(
                midi,
                timbre,
                vocoder=vocoder,
                start=start,
                duration=duration,
                tracks=tracks,
                tail=tail,
                progress=progress,
                texture=texture,
            )
        )
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
