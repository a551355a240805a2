"""Fixtures of the listening-test tests: a small gallery folder of real OGG/Opus clips.

The gallery is written here as ``mel2mel gallery build`` writes one (``gallery.json`` and
``audio/<track>/<instrument>/<config>.ogg``), with generated signals: a harmonic tone for the
original, the same with noise or distortion for the systems, and a muffled one for the anchor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mel2mel.listening.store import Rating

SR = 16_000
TRACKS = ("bach-bwv66_6-perf1", "bach-bwv67_7-perf1", "bach-bwv69_6-perf2")
INSTRUMENTS = ("Grand Piano", "Trumpet")
CONFIGS = (
    ("original", "Original (FluidSynth)", "reference"),
    ("mulaw8", "8-bit mu-law", "system"),
    ("model-log-abs", "Mel2Mel log-abs", "system"),
    ("model-abs", "Mel2Mel abs", "system"),
    ("anchor", "Anchor (3.5 kHz low-pass)", "anchor"),
)


def _signal(track: int, instrument: int, config: int, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    f0 = 220.0 * 2 ** ((3 * track + 7 * instrument) / 12)
    harmonics = 8 if config != 4 else 2  # the anchor: muffled
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1))
    noise = np.random.default_rng(config).standard_normal(t.size) * 0.05 * config
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (0.2 * x * fade + noise * fade).astype(np.float32)


def make_site(root: Path, seconds: float = 0.6, tracks=TRACKS, instruments=INSTRUMENTS) -> Path:
    """A gallery folder with one OGG/Opus clip per (track, instrument, configuration)."""
    import soundfile as sf

    clips = []
    for i, track in enumerate(tracks):
        for j, instrument in enumerate(instruments):
            slug = instrument.lower().replace(" ", "-")
            for k, (name, _, _) in enumerate(CONFIGS):
                rel = f"audio/{track}/{slug}/{name}.ogg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(root / rel, _signal(i, j, k, seconds), SR, format="OGG", subtype="OPUS")
                clips.append(
                    {
                        "track": track,
                        "instrument": instrument,
                        "config": name,
                        "audio": rel,
                        "mel": f"mel/{track}/{slug}/{name}.png",
                    }
                )
    index = {
        "format": "mel2mel-gallery",
        "version": 1,
        "title": "Test gallery",
        "segment_seconds": seconds,
        "sample_rate": SR,
        "audio_format": "ogg",
        "tracks": [{"id": t, "title": t, "start": 0.0} for t in tracks],
        "instruments": list(instruments),
        "configs": [
            {
                "name": n,
                "label": label,
                "role": role,
                "hidden": role == "anchor",
                "description": "",
                "figures": {},
            }
            for n, label, role in CONFIGS
        ],
        "clips": clips,
    }
    (root / "gallery.json").write_text(json.dumps(index, indent=1))
    return root


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test gallery: 3 tracks x 2 instruments x 5 configurations of 0.6 s clips."""
    return make_site(tmp_path_factory.mktemp("gallery"))


def rating(
    listener: int,
    config: str,
    score: int,
    *,
    phase: str = "test",
    instrument: str = "Trumpet",
    track: str = "t1",
) -> Rating:
    """A rating row as the store returns it (role from :data:`CONFIGS`)."""
    role = {n: r for n, _, r in CONFIGS}.get(config, "system")
    attention = phase == "test" and role != "system"
    return Rating(listener, "s", phase, track, instrument, config, role, attention, score, 0, 0.0)
