"""Making a gallery's clips: one segment of a test track, one instrument, one configuration.

Every clip of a row (a track and an instrument) covers the same frames of the dataset item:
the original is the item's FluidSynth audio, the copy-synthesis columns vocode the item's
mel, and the model columns run :class:`~mel2mel.Synthesizer` on the piece's MIDI over the
same time range (the models still see the notes around it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.data.dataset import item_paths, roll_path
from mel2mel.data.fluidsynth import from_int16
from mel2mel.errors import UserError
from mel2mel.evaluation.report import BinStats
from mel2mel.gallery.configs import ANCHOR_CUTOFF_HZ, ClipConfig
from mel2mel.synthesizer import Synthesizer
from mel2mel.vocoders.base import Vocoder
from mel2mel.vocoders.mulaw import dequantize, quantize

ROW_PEAK = 0.5  # every row is scaled so that its original peaks at -6 dBFS
FADE_SECONDS = 0.02  # every clip fades in and out, so that a cut note does not click


@dataclass(frozen=True)
class Segment:
    """The frames of one test track that a gallery row plays.

    Attributes
    ----------
    piece:
        Manifest id of the track.
    midi:
        Its MIDI file (the dataset's cached conversion or source).
    first, frames:
        First mel frame and number of frames (``frames * HOP_LENGTH`` samples).
    """

    piece: str
    midi: Path
    first: int
    frames: int

    @property
    def start(self) -> float:
        """Start in seconds."""
        return self.first / C.FRAME_RATE

    @property
    def seconds(self) -> float:
        """Length in seconds."""
        return self.frames / C.FRAME_RATE


def busiest_window(roll: np.ndarray, frames: int, step: int = 25) -> int:
    """First frame of the ``frames``-long window (on a ``step``-frame grid) holding the most
    note onsets of ``roll`` (uint8/float[176 x T]); 0 for a roll shorter than the window."""
    onsets = (np.asarray(roll[C.N_KEYS :]) > 0).sum(0)
    last = roll.shape[1] - frames
    if last <= 0:
        return 0
    starts = np.arange(0, last + 1, step)
    cum = np.concatenate([[0], np.cumsum(onsets)])
    counts = cum[starts + frames] - cum[starts]
    return int(starts[int(np.argmax(counts))])


def choose_segment(data: Path, piece: dict[str, Any], midi: Path, seconds: float) -> Segment:
    """The ``seconds``-long segment of ``piece`` with the most onsets (the whole piece when
    shorter)."""
    roll = np.load(roll_path(data, piece["id"]), mmap_mode="r")
    frames = min(round(seconds * C.FRAME_RATE), int(piece["frames"]))
    return Segment(piece["id"], midi, busiest_window(roll, frames), frames)


def fade(audio: np.ndarray, seconds: float = FADE_SECONDS) -> np.ndarray:
    """``audio`` with raised-cosine fades of ``seconds`` at both ends (a copy)."""
    out = np.array(audio, dtype=np.float32)
    n = min(round(seconds * C.SAMPLE_RATE), len(out) // 2)
    if n > 0:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))).astype(np.float32)
        out[:n] *= ramp
        out[-n:] *= ramp[::-1]
    return out


def low_pass(audio: np.ndarray, cutoff_hz: float = ANCHOR_CUTOFF_HZ) -> np.ndarray:
    """``audio`` with every component above ``cutoff_hz`` removed (an FFT brick wall)."""
    spec = np.fft.rfft(audio.astype(np.float64))
    freqs = np.fft.rfftfreq(len(audio), 1.0 / C.SAMPLE_RATE)
    spec[freqs > cutoff_hz] = 0.0
    return np.fft.irfft(spec, n=len(audio)).astype(np.float32)


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """``audio`` cut or zero-padded to ``n`` samples."""
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, len(audio))] = audio[:n]
    return out


class ClipMaker:
    """Renders clips, loading each model and vocoder once.

    Parameters
    ----------
    data:
        The dataset folder the tracks come from.
    device:
        Torch device of the models.
    """

    def __init__(self, data: Path, device: str = "cpu") -> None:
        self.data = Path(data)
        self.device = device
        self._synths: dict[str, Synthesizer] = {}
        self._vocoders: dict[str, Vocoder] = {}

    def synth(self, model: str) -> Synthesizer:
        """The synthesizer of ``model`` (``"pretrained"``, ``"paper"`` or a path)."""
        if model not in self._synths:
            path = None if model == "pretrained" else model
            self._synths[model] = Synthesizer.from_pretrained(
                path, vocoder="griffinlim", device=self.device, timbre_library=False
            )
        return self._synths[model]

    def vocoder(self, spec: str) -> Vocoder:
        """A vocoder by kind or export path (loaded as :meth:`Synthesizer.load_vocoder` does,
        through a model's synthesizer: the shipped one when no model was loaded yet)."""
        if spec not in self._vocoders:
            if not self._synths:
                self.synth("pretrained")
            self._vocoders[spec] = next(iter(self._synths.values())).load_vocoder(spec)
        return self._vocoders[spec]

    def original(self, seg: Segment, item_id: str) -> np.ndarray:
        """The item's FluidSynth audio over the segment, float32[frames * HOP_LENGTH]."""
        pcm = np.load(item_paths(self.data, item_id)["audio"], mmap_mode="r")
        a = seg.first * C.HOP_LENGTH
        n = seg.frames * C.HOP_LENGTH
        return fit_length(from_int16(np.asarray(pcm[a : a + n])), n)

    def clip(self, cfg: ClipConfig, seg: Segment, item_id: str, instrument: str) -> np.ndarray:
        """The clip of ``cfg`` for one row, float32[frames * HOP_LENGTH], before gain and fades.

        Raises UserError if a model lacks ``instrument`` or a vocoder cannot be loaded.
        """
        n = seg.frames * C.HOP_LENGTH
        if cfg.kind in ("original", "mulaw8", "anchor"):
            ref = self.original(seg, item_id)
            if cfg.kind == "mulaw8":  # quantized at the level the page plays it
                scale = ROW_PEAK / max(float(np.abs(ref).max()), 1e-4)
                y = dequantize(quantize(torch.from_numpy(ref * scale))).numpy()
                return (y / scale).astype(np.float32)
            return low_pass(ref) if cfg.kind == "anchor" else ref
        assert cfg.vocoder is not None
        if cfg.kind == "vocoder":
            paths = item_paths(self.data, item_id)
            mel = np.load(paths["mel"], mmap_mode="r")[:, seg.first : seg.first + seg.frames]
            roll = np.load(roll_path(self.data, seg.piece), mmap_mode="r")
            part = np.zeros((C.ROLL_CHANNELS, seg.frames), dtype=np.float32)
            got = np.asarray(roll[:, seg.first : seg.first + seg.frames], dtype=np.float32)
            part[:, : got.shape[1]] = got / 127.0
            voc = self.vocoder(cfg.vocoder)
            audio = voc.vocode(np.asarray(mel, dtype=np.float32), part).cpu().numpy()
            return fit_length(audio, n)
        assert cfg.model is not None
        synth = self.synth(cfg.model)
        names = {i.name for i in synth.instruments()}
        if instrument not in names:
            raise UserError(
                f"--config {cfg.name}: the model {cfg.model} has no instrument {instrument!r} "
                f"(it has {', '.join(sorted(names))})"
            )
        audio = synth.render(
            seg.midi, instrument, vocoder=self.vocoder(cfg.vocoder), start=seg.start,
            duration=seg.seconds, texture=cfg.texture,
        )  # fmt: skip
        return fit_length(audio, n)


def clip_figures(clip: np.ndarray, reference_mel: np.ndarray) -> dict[str, float]:
    """Log-mel error (dB) and mean per-bin r of ``clip`` against the original's log-mel."""
    stats = BinStats()
    mel = log_mel(clip)
    t = min(mel.shape[1], reference_mel.shape[1])
    stats.update(mel[:, :t], reference_mel[:, :t])
    r = stats.correlation()
    return {"mae_db": stats.mae_db(), "r": float(np.nanmean(r)) if np.isfinite(r).any() else 1.0}
