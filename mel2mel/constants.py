"""Signal conventions shared by every part of mel2mel.

Every size in the package derives from the numbers here, so a piano roll, a log-mel
spectrogram and a waveform of the same clip always line up frame for frame:

* audio is 16 kHz mono float32 in [-1, 1];
* one frame is ``HOP_LENGTH`` = 128 samples, i.e. ``FRAME_RATE`` = 125 frames per second;
* frame ``i`` is *centred* on sample ``i * HOP_LENGTH`` (``torch.stft(center=True)``, zero
  padding), so ``n`` samples give ``n // HOP_LENGTH + 1`` frames;
* the mel analysis uses a 1024-point FFT with a 1024-sample Hann window (64 ms, enough to
  resolve neighbouring semitones down to about C3) and 80 Slaney-normalized mel bands from
  0 Hz to the Nyquist frequency (librosa's defaults for ``fmin``/``fmax``);
* values are the *natural log* of the mel **magnitude** (power 1), floored at
  ``LOG_FLOOR`` = 1e-5 so silence sits at ``log(1e-5) ~= -11.5``; music at FluidSynth's
  default gain mostly lies in [-10, 2], matching the range the paper's demo displays;
* the piano roll spans the 88 piano keys A0 (MIDI 21) .. C8 (MIDI 108), as two blocks
  (sounding frames, then onset frames) of 88 channels carrying velocity / 127.
"""

from __future__ import annotations

import math

SAMPLE_RATE: int = 16_000
HOP_LENGTH: int = 128
FRAME_RATE: float = SAMPLE_RATE / HOP_LENGTH  # 125.0 frames per second
N_FFT: int = 1024
WIN_LENGTH: int = 1024
N_MELS: int = 80
F_MIN: float = 0.0
F_MAX: float = SAMPLE_RATE / 2
LOG_FLOOR: float = 1e-5
LOG_SILENCE: float = math.log(LOG_FLOOR)
# A difference of natural-log magnitudes d = ln(a/b) is 20 * log10(a/b) = d * DB_PER_NEPER dB.
DB_PER_NEPER: float = 20.0 / math.log(10.0)  # ~8.686
# The networks see (log-mel - MEL_CENTER) / MEL_SCALE: [-11.5, 2] becomes roughly [-2, 2].
MEL_CENTER: float = -6.0
MEL_SCALE: float = 3.0

MIDI_MIN: int = 21  # A0
MIDI_MAX: int = 108  # C8
N_KEYS: int = MIDI_MAX - MIDI_MIN + 1  # 88
#: Velocity bands of a frame, by its loudest sounding note: pp < 40, mf 40-89, ff >= 90 (the
#: evaluation's groups, and the frames ``train.quiet_weight`` weighs).
VELOCITY_BANDS: dict[str, tuple[int, int]] = {"pp": (1, 39), "mf": (40, 89), "ff": (90, 127)}
ROLL_CHANNELS: int = 2 * N_KEYS  # frame block, then onset block

# The paper's ten General MIDI programs (0-based), in the paper's order.
PAPER_INSTRUMENTS: dict[str, int] = {
    "Grand Piano": 0,
    "Electric Piano": 4,
    "Vibraphone": 11,
    "Church Organ": 19,
    "Acoustic Guitar": 24,
    "Pizzicato Strings": 45,
    "Orchestral Harp": 46,
    "String Ensemble": 48,
    "Trumpet": 56,
    "Synth Lead": 80,
}


def num_frames(num_samples: int) -> int:
    """Number of centred frames for ``num_samples`` samples of audio."""
    return num_samples // HOP_LENGTH + 1


def frames_to_samples(frames: int) -> int:
    """Number of samples a vocoder produces for ``frames`` mel frames."""
    return frames * HOP_LENGTH
