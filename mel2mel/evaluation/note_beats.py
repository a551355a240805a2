"""Measure each instrument's note beats (:mod:`mel2mel.models.beats`) on its SoundFont.

FluidSynth plays held notes of every instrument of a dataset (its SoundFont, program and render
settings, from the manifest): :data:`PROBE_KEYS`, :data:`PROBE_SECONDS` each, at velocity
:data:`PROBE_VELOCITY`. The level of each of the first :data:`HARMONICS` harmonics is tracked
over the held part (a 4096-point spectrum every 10 ms, the peak within a quarter tone of the
harmonic), its decay removed by a straight line in dB, and the strongest modulation between
:data:`BEAT_RANGE_HZ` read from the envelope's spectrum. Layers detuned by a ratio ``c`` make
harmonic ``h`` of a key at ``f0`` beat at ``h * f0 * c``: where the harmonics that move by at
least :data:`MIN_RANGE_DB` agree on one ``c`` (at least :data:`MIN_AGREEMENT` of them within
15 % of the median), the instrument beats with that detune, and with the depth whose dips
match the median range of those harmonics. Otherwise, where most harmonics of every key pulse
by at least :data:`MIN_TREMOLO_DB` at one rate in :data:`TREMOLO_RANGE_HZ` (their envelope's
decay removed by a cubic, the strongest rate's swing fitted by least squares; at least
:data:`MIN_TREMOLO_AGREEMENT` of them within 15 % of the median), the instrument has a
**tremolo** at that rate, with the depth of their median swing (corrected for the analysis
window, :func:`window_response`), kept only if its phase is the same at every key
(:data:`MIN_PHASE_LOCK`): an oscillator started by each note-on, which the synthesizer can
draw in step, not a free-running chorus. Otherwise (a decay, an ensemble of many layers) its
depth is 0. No gradient, no tuning.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
from tqdm import tqdm

from mel2mel import constants as C
from mel2mel.data.dataset import read_manifest
from mel2mel.data.fluidsynth import RenderSettings, render_midi
from mel2mel.errors import UserError
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.beats import ATTACK_FRAMES, MAX_DEPTH, MAX_HARMONIC, NoteBeats
from mel2mel.vocoders.partials import key_frequencies

PROBE_KEYS = (48, 55, 60, 67, 72, 79)  # MIDI notes held one after another
PROBE_SECONDS = 6.0
PROBE_GAP = 1.0  # silence between held notes (the release)
PROBE_VELOCITY = 90
HARMONICS = 8
ANALYSIS = (0.5, 5.5)  # seconds after each onset that are analysed
BEAT_RANGE_HZ = (0.35, 8.0)  # a beat needs >= 2 periods in the analysed 5 s
MIN_RANGE_DB = 6.0  # a harmonic whose level moves less is not counted as beating
MIN_AGREEMENT = 0.5
MIN_MOVING = 8  # harmonics that must move for a verdict
MIN_TREMOLO_DB = 1.0  # a harmonic pulsing less (peak to peak) is not counted as a tremolo's
TREMOLO_RANGE_HZ = (2.0, 6.0)  # below: a decay's curve; above: mostly smoothed away
MIN_TREMOLO_AGREEMENT = 0.75  # a note-on's oscillator moves nearly every harmonic at its rate
MIN_PHASE_LOCK = 0.7  # a tremolo's phases at every key: length of their mean unit vector
PHASE_SECONDS = 6.0  # every key held this long when its phases are measured
PHASE_WINDOW = (ATTACK_FRAMES / C.FRAME_RATE, 5.8)  # from where the beats reach their depth
ENVELOPE_HOP = 160  # 10 ms
ENVELOPE_FFT = 4096


@dataclass(frozen=True)
class BeatFit:
    """What the probe found for one instrument: the detune and depth (0: no beats), the share
    of the moving harmonics that agree on the detune (or on the tremolo), how many moved, and
    the tremolo's rate in Hz (0: none)."""

    detune: float
    depth: float
    agreement: float
    moving: int
    tremolo: float = 0.0


def probe_midi(
    program: int, keys: Sequence[int] = PROBE_KEYS, seconds: float = PROBE_SECONDS
) -> mido.MidiFile:
    """``keys`` held ``seconds`` each, :data:`PROBE_GAP` apart."""
    mid = mido.MidiFile(ticks_per_beat=500)  # 120 bpm: a tick is 1 ms
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500_000))
    track.append(mido.Message("program_change", program=program, time=0))
    hold, gap = round(seconds * 1000), round(PROBE_GAP * 1000)
    for k, key in enumerate(keys):
        track.append(
            mido.Message("note_on", note=key, velocity=PROBE_VELOCITY, time=gap if k else 0)
        )
        track.append(mido.Message("note_off", note=key, velocity=0, time=hold))
    track.append(mido.MetaMessage("end_of_track", time=gap))
    return mid


def harmonic_levels(
    audio: np.ndarray, f0: float, harmonics: int = HARMONICS, window: tuple[float, float] = ANALYSIS
) -> tuple[np.ndarray, np.ndarray]:
    """``(times float64[frames], power float64[harmonics x frames])``: the power of each
    harmonic of ``f0`` in ``audio`` (one held note, from its onset; the spectrum's peak within a
    quarter tone of the harmonic, or 0.4 ``f0``), every :data:`ENVELOPE_HOP` samples over
    ``window`` seconds; ``times`` are the frames' centres from the onset. Harmonics past
    Nyquist have power 0."""
    n = ENVELOPE_FFT
    lo, hi = (round(s * C.SAMPLE_RATE) for s in window)
    starts = np.arange(lo, min(hi, len(audio) - n), ENVELOPE_HOP)
    frames = np.stack([audio[s : s + n] for s in starts]) * np.hanning(n)
    spec = np.abs(np.fft.rfft(frames, 4 * n, axis=1)) ** 2
    freq = np.fft.rfftfreq(4 * n, 1.0 / C.SAMPLE_RATE)
    out = np.zeros((harmonics, len(starts)))
    for h in range(1, harmonics + 1):
        band = np.abs(freq - h * f0) < min(h * f0 * (2 ** (1 / 24) - 1), 0.4 * f0)
        if h * f0 < C.SAMPLE_RATE / 2 - 200 and band.any():
            out[h - 1] = spec[:, band].max(axis=1)
    return (starts + n / 2) / C.SAMPLE_RATE, out


def harmonic_envelopes(audio: np.ndarray, f0: float) -> np.ndarray:
    """float64[HARMONICS x frames]: :func:`harmonic_levels` over :data:`ANALYSIS` in dB."""
    return 10 * np.log10(harmonic_levels(audio, f0)[1] + 1e-24)


def _strongest_rate(
    envelope: np.ndarray, degree: int, band_hz: tuple[float, float]
) -> tuple[np.ndarray, float]:
    """``(detrended, rate Hz)``: ``envelope`` (one value every :data:`ENVELOPE_HOP` samples)
    less its decay, a polynomial of ``degree``, and the rate of its spectrum's peak within
    ``band_hz``."""
    t = np.arange(len(envelope))
    detrended = envelope - np.polyval(np.polyfit(t, envelope, degree), t)
    spec = np.abs(np.fft.rfft(detrended * np.hanning(len(t)), 16 * len(t)))
    freq = np.fft.rfftfreq(16 * len(t), ENVELOPE_HOP / C.SAMPLE_RATE)
    band = (freq >= band_hz[0]) & (freq <= band_hz[1])
    return detrended, float(freq[band][np.argmax(spec[band])])


def envelope_beat(envelope: np.ndarray) -> tuple[float, float]:
    """``(frequency Hz, range dB)`` of a harmonic's strongest modulation in
    :data:`BEAT_RANGE_HZ`, after its decay (a straight line in dB) is removed; the range is
    between the 5th and 95th percentiles."""
    detrended, peak = _strongest_rate(envelope, 1, BEAT_RANGE_HZ)
    return peak, float(np.percentile(detrended, 95) - np.percentile(detrended, 5))


def envelope_pulse(envelope: np.ndarray) -> tuple[float, float]:
    """``(rate Hz, swing dB)`` of a harmonic's strongest pulse in :data:`TREMOLO_RANGE_HZ`,
    after its decay (a cubic in dB) is removed: the swing is twice the amplitude of the
    sinusoid at that rate fitted by least squares, over what the analysis window leaves of a
    pulse that fast (:func:`window_response`); ``(0, 0)`` when the strongest lies on the
    range's lower edge (the rest of a decay)."""
    detrended, peak = _strongest_rate(envelope, 3, TREMOLO_RANGE_HZ)
    if peak < TREMOLO_RANGE_HZ[0] * 1.05:
        return 0.0, 0.0
    w = 2 * math.pi * peak * ENVELOPE_HOP / C.SAMPLE_RATE * np.arange(len(envelope))
    coef = np.linalg.lstsq(np.stack([np.cos(w), np.sin(w)], 1), detrended, rcond=None)[0]
    return peak, 2 * float(np.hypot(*coef)) / window_response(peak)


def window_response(hz: float) -> float:
    """The share of a level modulation at ``hz`` that survives :func:`harmonic_levels`: the
    spectrum's peak at a harmonic averages its amplitude over the analysis window (a Hann
    window of :data:`ENVELOPE_FFT` samples, 0.26 s), 1 for slow beats, 0.44 at 4.2 Hz."""
    window = np.hanning(ENVELOPE_FFT)
    phase = np.exp(-2j * math.pi * hz * np.arange(ENVELOPE_FFT) / C.SAMPLE_RATE)
    return float(abs(np.sum(window * phase)) / window.sum())


def fit_beats(audio: np.ndarray) -> BeatFit:
    """The :class:`BeatFit` of one instrument from FluidSynth's render of :func:`probe_midi`
    (mono, from the first onset)."""
    ratios, ranges, pulses = [], [], []
    judged = 0
    step = PROBE_SECONDS + PROBE_GAP
    for k, key in enumerate(PROBE_KEYS):
        f0 = float(key_frequencies()[key - C.MIDI_MIN])
        start = round(k * step * C.SAMPLE_RATE)
        note = audio[start : start + round(PROBE_SECONDS * C.SAMPLE_RATE)]
        envelopes = harmonic_envelopes(note, f0)
        for h, env in enumerate(envelopes, start=1):
            if env.max() < envelopes.max() - 40:  # a harmonic too weak to judge
                continue
            judged += 1
            peak, spread = envelope_beat(env)
            if spread >= MIN_RANGE_DB:
                ratios.append(peak / (h * f0))
                ranges.append(spread)
            pulse, swing = envelope_pulse(env)
            if swing >= MIN_TREMOLO_DB:
                pulses.append((pulse, swing))
    if len(ratios) < MIN_MOVING:
        return _tremolo(pulses, judged) or BeatFit(0.0, 0.0, 0.0, len(ratios))
    ratios_a, ranges_a = np.array(ratios), np.array(ranges)
    detune, agree = _consensus(ratios_a)
    share = float(agree.mean())
    if share < MIN_AGREEMENT:
        return _tremolo(pulses, judged) or BeatFit(detune, 0.0, share, len(ratios))
    return BeatFit(detune, _depth(np.median(ranges_a[agree])), share, len(ratios))


def _consensus(values: np.ndarray) -> tuple[float, np.ndarray]:
    """The median of ``values`` and which of them lie within 15 % of it."""
    median = float(np.median(values))
    return median, np.abs(values / median - 1) < 0.15


def _depth(range_db: float) -> float:
    """The depth of two layers whose power swings by ``range_db``: layers of relative level r
    swing it by ((1 + r) / (1 - r))^2."""
    q = np.sqrt(10 ** (float(range_db) / 10))
    return float(min(MAX_DEPTH, (q - 1) / (q + 1)))


def _tremolo(pulses: list[tuple[float, float]], judged: int) -> BeatFit | None:
    """A tremolo from ``(rate Hz, swing dB)`` of the harmonics that pulse by at least
    :data:`MIN_TREMOLO_DB` (:func:`envelope_pulse`), of ``judged`` harmonics strong enough to
    judge: most of them must pulse, and most of those at one rate; else None."""
    if len(pulses) < max(MIN_MOVING, MIN_AGREEMENT * judged):
        return None
    rates, ranges = np.array(pulses).T
    rate, agree = _consensus(rates)
    share = float(agree.mean())
    if share < MIN_TREMOLO_AGREEMENT:
        return None
    return BeatFit(0.0, _depth(np.median(ranges[agree])), share, len(pulses), rate)


def fit_phases(audio: np.ndarray, detune: float, tremolo: float = 0.0) -> np.ndarray:
    """float64[N_KEYS x MAX_HARMONIC]: the phase of each key's harmonics' beats at ``detune``
    and ``tremolo`` Hz (extrapolated to the onset) in FluidSynth's render of
    ``probe_midi(program, every key, PHASE_SECONDS)``: each harmonic's power over its mean,
    fitted by least squares with a constant, a straight line (a decay) and the cosine and sine
    of its beat; 0 where the harmonic is past Nyquist."""
    out = np.zeros((C.N_KEYS, MAX_HARMONIC))
    step = PHASE_SECONDS + PROBE_GAP
    for k in range(C.N_KEYS):
        f0 = float(key_frequencies()[k])
        start = round(k * step * C.SAMPLE_RATE)
        note = audio[start : start + round(PHASE_SECONDS * C.SAMPLE_RATE)]
        t, power = harmonic_levels(note, f0, MAX_HARMONIC, PHASE_WINDOW)
        for h in range(1, MAX_HARMONIC + 1):
            p = power[h - 1]
            if p.mean() <= 0:
                continue
            w = 2 * math.pi * (h * f0 * detune + tremolo) * t
            basis = np.stack([np.ones_like(t), t - t.mean(), np.cos(w), np.sin(w)], axis=1)
            coef = np.linalg.lstsq(basis, p / p.mean(), rcond=None)[0]
            out[k, h - 1] = math.atan2(-coef[3], coef[2]) % (2 * math.pi)
    return out


def fit_note_beats(
    model: Mel2Mel, data: str | os.PathLike, *, progress: bool = True
) -> tuple[NoteBeats, list[BeatFit]]:
    """The :class:`NoteBeats` of ``model``'s instruments, measured on the SoundFonts of the
    dataset at ``data`` (every instrument of the model must be in its manifest, by name)."""
    manifest = read_manifest(data)
    render = dict(manifest.get("render") or {})
    by_name = {i["name"]: i for i in manifest["instruments"]}
    names = [i.name for i in model.instruments]
    missing = [n for n in names if n not in by_name]
    if missing:
        have = ", ".join(by_name)
        raise UserError(f"{data}: no instrument(s) {', '.join(missing)} in its manifest ({have})")
    fits: list[BeatFit] = []
    phases: list[tuple[tuple[float, ...], ...]] = []
    with tempfile.TemporaryDirectory(prefix="mel2mel-beats-") as work:
        for name in tqdm(names, disable=not progress, unit="instrument"):
            inst = by_name[name]
            settings = RenderSettings(
                str(inst.get("soundfont") or render.get("soundfont") or manifest["soundfont"]),
                gain=render.get("gain"),
                reverb=render.get("reverb", True),
                chorus=render.get("chorus", True),
            )
            program = int(inst["program"])
            audio = render_midi(probe_midi(program), settings, work_dir=Path(work))
            fit = fit_beats(audio)
            fits.append(fit)
            phases.append(())
            if fit.depth > 0:
                every_key = probe_midi(program, range(C.MIDI_MIN, C.MIDI_MAX + 1), PHASE_SECONDS)
                audio = render_midi(every_key, settings, work_dir=Path(work))
                measured = fit_phases(audio, fit.detune, fit.tremolo)
                if fit.tremolo and phase_lock(measured) < MIN_PHASE_LOCK:
                    fits[-1] = dataclasses.replace(fit, depth=0.0)  # not in step with the notes
                else:
                    phases[-1] = tuple(map(tuple, measured))
    table = model.embedding.weight.detach().double().cpu().tolist()
    detune, depth = [f.detune for f in fits], [f.depth for f in fits]
    tremolo = [f.tremolo if f.depth else 0.0 for f in fits]
    return NoteBeats(names, table, detune, depth, tuple(phases), tremolo=tremolo), fits


def phase_lock(phases: np.ndarray) -> float:
    """How alike the keys' phases are (float64[N_KEYS x MAX_HARMONIC], 0 where not measured):
    the length of the mean unit vector of each harmonic's phases over the keys that have it,
    averaged over harmonics 1-4 (1: every key in step)."""
    locks = []
    for h in range(4):
        have = phases[:, h] != 0
        if have.sum() >= 2:
            locks.append(float(np.abs(np.exp(1j * phases[have, h]).mean())))
    return float(np.mean(locks)) if locks else 0.0
