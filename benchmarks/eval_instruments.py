"""An instrument classifier independent of mel2mel, for ``eval_transcription.py``.

It answers "is each rendered instrument recognizably itself?" without asking our own model:
clip-level statistics of standard librosa features (MFCCs and their deltas, spectral contrast,
centroid, bandwidth, roll-off, flatness, zero-crossing rate and the loudness envelope) feed a
standardized multinomial logistic regression (scikit-learn), trained on FluidSynth renders of
the dataset's **train** split (``items/*/*.audio.npy``). Every clip is scaled to unit RMS
first, so the classifier judges the sound, not its level. Clips quieter than
``SILENCE_DBFS`` (rests) are skipped in training; a render is judged at the clips where its
reference sounds (:func:`clips_at`).

Not a script: ``eval_transcription.py`` imports it (it lives next to it in ``benchmarks/``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mel2mel import constants as C

SILENCE_DBFS = -45.0  # clips with an RMS below this are rests, not instruments
FEATURE_VERSION = 1  # bump when features() changes, so cached features are not reused
N_FFT, HOP = 1024, 256


def clip_starts(audio: np.ndarray, seconds: float, limit: int | None = None) -> list[int]:
    """Sample offsets of the non-overlapping clips of ``seconds`` of ``audio`` that are not
    silent, at most ``limit`` of them spread evenly over the audio (all when ``None``)."""
    n = round(seconds * C.SAMPLE_RATE)
    out = []
    for s in range(0, len(audio) - n + 1, n):
        clip = np.asarray(audio[s : s + n], dtype=np.float64)
        rms = float(np.sqrt(np.mean(np.square(clip))))
        if rms > 0 and 20 * np.log10(rms) > SILENCE_DBFS:
            out.append(s)
    if limit is not None and len(out) > limit:
        pick = np.linspace(0, len(out) - 1, limit).round().astype(int)
        out = [out[i] for i in pick]
    return out


def clips_at(audio: np.ndarray, starts: Sequence[int], seconds: float) -> list[np.ndarray]:
    """The clips of ``seconds`` of ``audio`` at ``starts`` (zero-padded past its end).

    A render is judged on the clips where its reference (FluidSynth's render of the same
    notes) sounds, :func:`clip_starts` of the reference, silent or not: a render that is
    silent where the reference plays must count as a miss, not leave the clip out."""
    n = round(seconds * C.SAMPLE_RATE)
    out = []
    for s in starts:
        clip = np.zeros(n, dtype=np.float32)
        part = np.asarray(audio[s : s + n], dtype=np.float32)
        clip[: len(part)] = part
        out.append(clip)
    return out


def clips(audio: np.ndarray, seconds: float, limit: int | None = None) -> list[np.ndarray]:
    """Non-overlapping clips of ``seconds`` that are not silent, at most ``limit`` of them
    spread evenly over the audio (all of them when ``limit`` is ``None``)."""
    return clips_at(audio, clip_starts(audio, seconds, limit), seconds)


def features(clip: np.ndarray) -> np.ndarray:
    """``float32[F]`` clip-level statistics of one clip (16 kHz mono)."""
    import librosa

    sr = C.SAMPLE_RATE
    y = clip / max(float(np.sqrt(np.mean(np.square(clip), dtype=np.float64))), 1e-9)
    spec = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
    power = spec**2
    mel = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=64)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=20)
    delta = librosa.feature.delta(mfcc)
    contrast = librosa.feature.spectral_contrast(S=spec, sr=sr, fmin=100.0, n_bands=6)
    frames = [
        np.log(librosa.feature.spectral_centroid(S=spec, sr=sr) + 1.0),
        np.log(librosa.feature.spectral_bandwidth(S=spec, sr=sr) + 1.0),
        np.log(librosa.feature.spectral_rolloff(S=spec, sr=sr) + 1.0),
        np.log(librosa.feature.spectral_flatness(S=spec) + 1e-6),
        librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP),
    ]
    # The loudness envelope separates decaying (piano, harp, pizzicato) from sustained sounds.
    rms_db = librosa.amplitude_to_db(librosa.feature.rms(S=spec, frame_length=N_FFT) + 1e-6)
    env = np.diff(rms_db, axis=1)
    parts = [
        mfcc.mean(1), mfcc.std(1), np.abs(delta).mean(1), contrast.mean(1), contrast.std(1),
        *[np.array([f.mean(), f.std()]) for f in frames],
        np.array([rms_db.std(), env.mean(), np.abs(env).mean(), np.percentile(env, 10)]),
    ]  # fmt: skip
    return np.concatenate(parts).astype(np.float32)


#: ``features()``'s columns by what they describe, ``(name, first, stop)``.
FEATURE_GROUPS: tuple[tuple[str, int, int], ...] = (
    ("MFCC mean", 0, 20), ("MFCC spread over time", 20, 40), ("MFCC frame-to-frame change", 40, 60),
    ("spectral contrast mean", 60, 67), ("spectral contrast spread", 67, 74),
    ("centroid, bandwidth, rolloff", 74, 80), ("flatness", 80, 82), ("zero crossings", 82, 84),
    ("loudness envelope", 84, 88),
)  # fmt: skip


def feature_shifts(ours: np.ndarray, reference: np.ndarray, train: np.ndarray) -> dict:
    """How the features of clips ``ours`` differ from those of the same clips ``reference``
    (both ``float[N x F]``), per :data:`FEATURE_GROUPS`, in standard deviations of the training
    clips ``train``: ``{group: (mean shift, mean absolute shift)}``."""
    scale = train.std(0) + 1e-9
    diff = (ours - reference) / scale
    return {name: (float(diff[:, a:b].mean()), float(np.abs(diff[:, a:b]).mean()))
            for name, a, b in FEATURE_GROUPS}  # fmt: skip


def feature_matrix(audio_clips: Sequence[np.ndarray]) -> np.ndarray:
    """``float32[N x F]``, one row per clip."""
    return np.stack([features(c) for c in audio_clips]) if audio_clips else np.zeros((0, 0))


def training_set(
    data: Path,
    manifest: dict[str, Any],
    split: str,
    clip_seconds: float,
    clips_per_item: int,
    cache: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and instrument indices of up to ``clips_per_item`` clips of every item of a
    split (the dataset's FluidSynth audio), cached in ``cache`` by their settings."""
    items = sorted((it["id"], it["instrument"]) for it in manifest["items"] if it["split"] == split)
    key = json.dumps([FEATURE_VERSION, str(data), split, clip_seconds, clips_per_item, items])
    path = cache / f"features-{split}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        saved = np.load(path)
        return saved["x"], saved["y"]
    xs, ys = [], []
    for item_id, instrument in items:
        piece, _, slug = item_id.partition("/")
        pcm = np.load(data / "items" / piece / f"{slug}.audio.npy", mmap_mode="r")
        audio = np.asarray(pcm, dtype=np.float32) / 32767.0
        for clip in clips(audio, clip_seconds, clips_per_item):
            xs.append(features(clip))
            ys.append(instrument)
    x, y = np.stack(xs), np.array(ys, dtype=np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return x, y


def train(x: np.ndarray, y: np.ndarray) -> Any:
    """A fitted scikit-learn pipeline: standardization + multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=3000))
    return model.fit(x, y)


def confusion(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """``int64[n x n]`` counts: row = true instrument, column = predicted."""
    out = np.zeros((n, n), dtype=np.int64)
    np.add.at(out, (true, pred), 1)
    return out


def plot_confusions(
    matrices: dict[str, np.ndarray], names: Sequence[str], path: Path, title: str
) -> None:
    """One row-normalized confusion matrix per renderer, side by side, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(matrices)
    fig, axes = plt.subplots(
        1, k, figsize=(3.6 * k + 0.6, 4.4), squeeze=False, layout="constrained"
    )
    for ax, (label, m) in zip(axes[0], matrices.items(), strict=True):
        rate = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(rate, vmin=0, vmax=1, cmap="Blues")
        acc = np.trace(m) / max(m.sum(), 1)
        ax.set_title(f"{label}\naccuracy {acc:.0%}", fontsize=9)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.tick_params(labelleft=ax is axes[0][0])
        ax.set_xlabel("predicted", fontsize=8)
        for i in range(len(names)):
            for j in range(len(names)):
                if rate[i, j] >= 0.05:
                    color = "white" if rate[i, j] > 0.6 else "black"
                    ax.text(j, i, f"{rate[i, j]:.0%}"[:-1], ha="center", va="center",
                            fontsize=6, color=color)  # fmt: skip
    axes[0][0].set_ylabel("true instrument", fontsize=8)
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
