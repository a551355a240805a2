"""The public inference API: MIDI + timbre -> 16 kHz audio, for pieces of any length.

Usage::

    from mel2mel import Synthesizer

    synth = Synthesizer.from_pretrained()                    # shipped models, CPU
    audio = synth.render("song.mid", timbre="trumpet")       # float32[N], 16 kHz
    audio = synth.render("song.mid", timbre="trumpet=0.3,vibes=0.7", tracks={2: "organ"})
    for chunk in synth.stream("long.mid", timbre="piano@0s,organ@600s"):
        ...                                                  # bounded memory, any length
    mel = synth.mel("song.mid", timbre=[0.1, -0.4])          # float32[80 x T] log-mel

Timbre specifications are described in :mod:`mel2mel.timbre.spec`. How a render runs:

1. The notes are read once (:func:`mel2mel.midi.read_notes`); the piano roll is never built
   whole: :class:`~mel2mel.synthesis.notes.NoteRoll` builds any window of it.
2. The acoustic model runs on overlapping windows, batched, cross-faded in the log domain; a
   piece that fits in one window (``exact_frames`` = 4016 frames, 32 s, by default) runs
   through the whole BiLSTM at once, exactly (:mod:`mel2mel.synthesis.streams`). Its
   detail gains, when the model has them (:mod:`mel2mel.models.sharpen`), deepen the peaks
   and valleys across bins that a squared-error model flattens, frame by frame.
3. The texture post-net, when the model has one (:mod:`mel2mel.models.texture`), adds the
   frame-to-frame texture a squared-error model averages out; its noise is a function of the
   frame and the seed, so a render is reproducible and chunking does not change it. The
   beats of an instrument's detuned layers, when the model has them measured
   (:mod:`mel2mel.models.beats`), are drawn from the notes, the frame and the seed the same way.
4. The vocoder consumes the mel as it arrives, with its own context.
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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel import pretrained, validate
from mel2mel.errors import UserError
from mel2mel.midi import MidiSource, NoteSequence
from mel2mel.models import export
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.export import export_paths, load_acoustic, load_texture
from mel2mel.models.texture import TexturePostnet
from mel2mel.pretrained import PRETRAINED_DIR
from mel2mel.synthesis.plan import Plan, check_strength, plan_render
from mel2mel.synthesis.streams import Frames, mel_stream, vocode_frames
from mel2mel.timbre.library import TimbreLibrary
from mel2mel.timbre.space import InstrumentInfo, TimbreSpace
from mel2mel.timbre.spec import Timbre, TimbreSpec
from mel2mel.validate import AudioCheck
from mel2mel.vocoders.base import Vocoder
from mel2mel.vocoders.griffinlim import GriffinLim

__all__ = ["PRETRAINED_DIR", "TAIL_SECONDS", "MelStream", "Synthesizer"]

TAIL_SECONDS = 1.0
PREROLL_FRAMES = 32  # vocoded before --start and dropped, so the vocoder has left context

PROGRESS_FORMAT = "{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]"

_warned_griffinlim = False


class MelStream(NamedTuple):
    """A piece's log-mel as it is made: see :meth:`Synthesizer.mel_stream`."""

    num_frames: int
    chunks: Iterator[np.ndarray]


def _library(spec: Any) -> Any:
    """The :class:`TimbreLibrary` of a ``timbre_library`` argument (``False``: none)."""
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
        default :class:`~mel2mel.timbre.library.TimbreLibrary`, a library or its folder, or
        ``False`` for none.
    texture:
        The :class:`~mel2mel.models.texture.TexturePostnet` trained on ``acoustic``'s
        predictions, or ``None`` to vocode the acoustic model's mel as it is.
    texture_strength:
        Default scale of the added texture (``render(texture=...)`` overrides it; 0: none);
        ``None``: the post-net's own ``default_strength`` (chosen when it was exported). A
        post-net with :attr:`~mel2mel.models.texture.TexturePostnet.instrument_strengths`
        scales each instrument's own strength by it (default 1).
    sharpen:
        Strength of the acoustic model's detail gains (:mod:`mel2mel.models.sharpen`): 1
        applies them as fitted, 0 leaves the model's mel as it is; no effect on a model
        without gains.
    beats:
        Strength of the beats of each instrument's detuned layers
        (:mod:`mel2mel.models.beats`): 1 draws them as measured, 0 not at all; no effect on a
        model without them.
    contrast:
        Strength of the acoustic model's note contrast (:mod:`mel2mel.models.contrast`),
        which puts a strike's energy in the struck notes' partials rather than the held
        ones': 1 as fitted, 0 not at all; no effect on a model without it.
    seed:
        Seed of the texture's noise and the beats' phases (part ``k`` of a per-track render
        uses ``seed + k``).
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
        sharpen: float = 1.0,
        beats: float = 1.0,
        contrast: float = 1.0,
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
        self.texture_strength = check_strength(texture_strength)
        self.sharpen = check_strength(sharpen, "detail gain strength")
        self.beats = check_strength(beats, "beat strength")
        self.contrast = check_strength(contrast, "note contrast strength")
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
        where = pretrained.path() if path is None else Path(path)
        desc = export_paths(where)[1]
        if not desc.is_file():
            if path is None:
                raise UserError(
                    f"no pretrained acoustic model is installed in {where}; pass the "
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
                        f"({export.vocoder_path('fast')}.*); using Griffin-Lim, "
                        "which sounds much rougher",
                        stacklevel=3,
                    )
                    _warned_griffinlim = True
                voc = GriffinLim()
            else:
                voc = export.load_pretrained_vocoder(key)  # raises a UserError that explains
        elif Path(key).with_suffix(".json").is_file():
            voc = export.load_vocoder(key)
        else:
            raise UserError(
                f"unknown vocoder {key!r}; use auto, fast, wavenet, griffinlim or the path of "
                "an exported vocoder"
            )
        self._vocoders[key] = voc = voc.to(self.device).eval()
        return voc

    def _find_vocoder(self, kind: str) -> Vocoder | None:
        stems = [export.vocoder_path(kind)]
        if self.model_dir is not None:
            stems.insert(0, self.model_dir / export.VOCODER_STEMS[kind])
        for stem in stems:
            if stem.with_suffix(".json").is_file() and stem.with_suffix(".safetensors").is_file():
                return export.load_vocoder(stem, self.device)
        return None

    def instruments(self) -> list[InstrumentInfo]:
        """The trained instruments: names, GM programs, embedding coordinates, aliases."""
        return self.timbres.describe()

    def timbre(self, spec: TimbreSpec | None = None) -> Timbre:
        """Resolve a timbre specification (:mod:`mel2mel.timbre.spec`); ``None``: instrument 0."""
        return self.timbres.resolve(spec)

    # -- rendering --------------------------------------------------------------------------

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
        plan = plan_render(
            self.timbres, self.texture_strength, midi, timbre, None, start, duration, tail, texture
        )
        roll, t = plan.groups[0]
        stream = mel_stream(self, roll, t, plan.first, plan.stop, plan.texture, self.seed)
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
        plan = plan_render(
            self.timbres,
            self.texture_strength,
            midi,
            timbre,
            tracks,
            start,
            duration,
            tail,
            texture,
        )
        voc = self.vocoder if vocoder is None else self.load_vocoder(vocoder)
        return self._audio(plan, voc, progress)

    def _audio(self, plan: Plan, voc: Vocoder, progress: bool) -> Iterator[np.ndarray]:
        from tqdm import tqdm

        lo = max(0, plan.first - PREROLL_FRAMES)
        streams = []
        for k, (roll, t) in enumerate(plan.groups):
            mels = mel_stream(self, roll, t, lo, plan.stop, plan.texture, self.seed + k)
            streams.append(vocode_frames(voc, Frames(mels, lo), lo, plan.stop))
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
            A name, alias, program, coordinates, mix or morph (:mod:`mel2mel.timbre.spec`);
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
