"""Each listener's session: a training phase, then a balanced, shuffled set of test trials.

A session is drawn once, when a listener starts, from a seed derived from the listener's token
(:func:`seed_of`), and stored (:mod:`mel2mel.listening.store`), so a reload resumes the same
order. It has:

* **training** (not counted): the reference and the anchor of one (track, instrument),
  labelled as examples of the best and the worst quality the listener will hear, then system
  clips of the same pair, rated for practice;
* **test trials**: ``trials`` clips (fewer when the gallery has fewer) from the other
  (track, instrument) pairs, balanced over the configurations (each gets ``trials / K``,
  rounded, the reference and the anchor first when it does not divide), laid end to end over
  the pairs in a random order, so that each pair is used equally often and no configuration
  meets a pair twice, then shuffled. Reference and anchor trials are the hidden attention
  checks: the listener is not told which they are.

Listeners differ in their random draws, so over many listeners every clip gets rated.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from mel2mel.listening.site import ClipKey, Site

DEFAULT_TRIALS = 40
DEFAULT_TRAINING = 4
PHASES = ("training", "test")


@dataclass(frozen=True)
class Trial:
    """One clip of a session.

    ``example`` is ``"best"`` or ``"worst"`` for the labelled training examples (the reference
    and the anchor), else ``None``.
    """

    key: ClipKey
    phase: str
    role: str
    example: str | None = None

    @property
    def attention(self) -> bool:
        """Whether this is a hidden attention check (a test trial of the reference or anchor)."""
        return self.phase == "test" and self.role != "system"


def seed_of(token: str) -> int:
    """The session seed of a listener's token (64 bits of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big")


def _training(
    site: Site, pairs: dict[tuple[str, str], dict[str, ClipKey]], rng: random.Random, count: int
) -> tuple[list[Trial], tuple[str, str] | None]:
    """The training trials and the (track, instrument) pair they use."""
    ref, anchor = site.reference, site.anchor
    usable = [p for p, c in sorted(pairs.items()) if ref in c and (anchor is None or anchor in c)]
    if count <= 0 or not usable:
        return [], None
    pair = rng.choice(usable)
    clips = pairs[pair]
    trials = [Trial(clips[ref], "training", "reference", "best")]
    if anchor is not None:
        trials.append(Trial(clips[anchor], "training", "anchor", "worst"))
    systems = [k for name, k in sorted(clips.items()) if site.configs[name].role == "system"]
    rng.shuffle(systems)
    trials += [Trial(k, "training", "system") for k in systems]
    return trials[:count], pair


def _counts(
    site: Site, by_config: dict[str, list[ClipKey]], n: int, rng: random.Random
) -> dict[str, int]:
    """How many test trials each configuration gets: one each in turn, attention checks first
    then the systems in a random order, while a configuration has clips left."""
    names = sorted(by_config)
    rng.shuffle(names)
    names.sort(key=lambda c: site.configs[c].role == "system")  # stable: attention first
    counts = dict.fromkeys(names, 0)
    left = min(n, sum(len(v) for v in by_config.values()))
    while left:
        for name in names:
            if left and counts[name] < len(by_config[name]):
                counts[name] += 1
                left -= 1
    return counts


def plan_session(
    site: Site, seed: int, *, trials: int = DEFAULT_TRIALS, training: int = DEFAULT_TRAINING
) -> list[Trial]:
    """The session of the listener whose seed is ``seed``: training first, then the test
    trials (module docstring). Deterministic in ``(site, seed, trials, training)``."""
    rng = random.Random(seed)
    pairs: dict[tuple[str, str], dict[str, ClipKey]] = defaultdict(dict)
    for key in site.audio:
        pairs[key.track, key.instrument][key.config] = key
    first, used = _training(site, pairs, rng, training)
    pool = [k for k in sorted(site.audio) if (k.track, k.instrument) != used]
    pool = pool or sorted(site.audio)  # a one-pair gallery: test on the same pair
    by_config: dict[str, list[ClipKey]] = defaultdict(list)
    for key in pool:
        by_config[key.config].append(key)
    counts = _counts(site, by_config, trials, rng)
    order = sorted({k[:2] for k in pool})
    rng.shuffle(order)
    rank = {pair: i for i, pair in enumerate(order)}
    usage: Counter[tuple[str, str]] = Counter()
    chosen: list[ClipKey] = []
    for name, count in counts.items():
        free = {k[:2]: k for k in by_config[name]}
        for _ in range(count):
            # the trials laid end to end over the pairs in turn: each pair used equally often
            pair = order[len(chosen) % len(order)]
            if pair not in free:  # this configuration lacks that clip: its least used pair
                pair = min(free, key=lambda p: (usage[p], rank[p]))
            chosen.append(free.pop(pair))
            usage[pair] += 1
    rng.shuffle(chosen)
    return first + [Trial(k, "test", site.configs[k.config].role) for k in chosen]
