"""Mean opinion scores with confidence intervals, attention flags, and the paper's scores.

* **MOS** of a set of ratings: their mean, with the 95 % confidence interval of a
  t-distribution, ``mean +/- t(0.975, n - 1) * sd / sqrt(n)`` (``sd`` with ``n - 1``), over
  all ratings of a configuration (or of a configuration and an instrument), as MOS tests
  report it (ITU-T P.800.2); one rating has no interval.
* **Attention flags**: a listener whose test ratings of the reference average below 4, or of
  the anchor above 2, did not listen (or not with care); their ratings are left out of the
  MOS unless asked (``include_flagged``). Training ratings never count.
* **The paper's table** (Kim et al. 2019, the poster's MOS +/- standard error), keyed by the
  gallery's configuration names (:data:`PAPER_MOS`).

The t quantile is computed here (no SciPy needed): exactly from the t-distribution's
closed form for integer degrees of freedom (Abramowitz and Stegun 26.7.3-4) by bisection, and
by the Cornish-Fisher expansion (26.7.5) above 100 degrees of freedom, where it is exact to
about 1e-9.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

from mel2mel.listening.store import Rating

REFERENCE_MIN = 4.0
ANCHOR_MAX = 2.0
LEVEL = 0.95


@dataclass(frozen=True)
class PaperScore:
    """A row of the paper's MOS table: the condition as the paper names it, MOS and its
    standard error."""

    condition: str
    mos: float
    se: float


#: The paper's MOS (ICASSP 2019 poster, ``../shared/PAPER.md``) by our configuration name.
PAPER_MOS: dict[str, PaperScore] = {
    "original": PaperScore("original FluidSynth audio", 4.316, 0.041),
    "mulaw8": PaperScore("8-bit mu-law of the original", 3.879, 0.051),
    "wavenet-true": PaperScore("WaveNet on ground-truth mel", 3.378, 0.052),
    "model-tanh-log-abs": PaperScore("Mel2Mel (tanh-log-abs) + WaveNet", 3.183, 0.056),
    "model-log-abs": PaperScore("Mel2Mel (log-abs) + WaveNet", 3.011, 0.058),
    "model-abs": PaperScore("Mel2Mel (abs) + WaveNet", 2.757, 0.058),
}


def _t_central(t: float, df: int) -> float:
    """P(-t < T < t) for Student's t with ``df`` (integer) degrees of freedom, exactly."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        total, term = 0.0, math.cos(theta)
        for power in range(1, df - 1, 2):
            total += term
            term *= c2 * (power + 1) / (power + 2)
        return 2.0 / math.pi * (theta + math.sin(theta) * total)
    total, term = 0.0, 1.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for power in range(0, df - 1, 2):
        total += term
        term *= c2 * (power + 1) / (power + 2)
    return math.sin(theta) * total


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` >= 1 degrees of freedom."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    if df > 100:  # Cornish-Fisher: four terms beyond the normal quantile
        z = NormalDist().inv_cdf(p)
        g = (
            (z**3 + z) / 4,
            (5 * z**5 + 16 * z**3 + 3 * z) / 96,
            (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
            (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
        )
        return z + sum(gk / df ** (k + 1) for k, gk in enumerate(g))
    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while _t_central(hi, df) < target:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_central(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Mos:
    """Mean opinion score of ``n`` ratings, their standard deviation (``n - 1``), and the
    half width of the confidence interval (NaN below two ratings)."""

    n: int
    mean: float
    sd: float
    half_width: float

    @property
    def lo(self) -> float:
        """Lower end of the confidence interval."""
        return self.mean - self.half_width

    @property
    def hi(self) -> float:
        """Upper end of the confidence interval."""
        return self.mean + self.half_width


def mos(scores: Sequence[float], level: float = LEVEL) -> Mos:
    """The MOS of ``scores`` with its t-distribution confidence interval at ``level``."""
    n = len(scores)
    if n == 0:
        return Mos(0, math.nan, math.nan, math.nan)
    mean = sum(scores) / n
    if n == 1:
        return Mos(1, mean, math.nan, math.nan)
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    return Mos(n, mean, sd, t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def flag_listeners(
    ratings: Iterable[Rating],
    *,
    reference_min: float = REFERENCE_MIN,
    anchor_max: float = ANCHOR_MAX,
) -> dict[int, str]:
    """The listeners who failed the attention checks, with why: mean test rating of the
    reference below ``reference_min`` or of the anchor above ``anchor_max``."""
    checks: dict[tuple[int, str], list[int]] = defaultdict(list)
    for r in ratings:
        if r.phase == "test" and r.role in ("reference", "anchor"):
            checks[r.listener, r.role].append(r.score)
    flagged: dict[int, list[str]] = defaultdict(list)
    for (listener, role), scores in sorted(checks.items()):
        mean = sum(scores) / len(scores)
        if role == "reference" and mean < reference_min:
            flagged[listener].append(f"reference rated {mean:.2f} < {reference_min:g}")
        if role == "anchor" and mean > anchor_max:
            flagged[listener].append(f"anchor rated {mean:.2f} > {anchor_max:g}")
    return {k: "; ".join(v) for k, v in flagged.items()}


@dataclass(frozen=True)
class Row:
    """A line of the summary: a configuration (and an instrument, or ``None`` for all), its
    label and role, how many listeners rated it, its MOS, and the paper's score if any."""

    config: str
    instrument: str | None
    label: str
    role: str
    listeners: int
    mos: Mos
    paper: PaperScore | None


@dataclass(frozen=True)
class Summary:
    """The results: one row per configuration (best first), one per (configuration,
    instrument), the listeners counted, the flagged ones (by id, with why) and whether their
    ratings were included."""

    configs: list[Row]
    instruments: list[Row]
    listeners: int
    ratings: int
    flagged: dict[int, str]
    include_flagged: bool


def summarize(
    ratings: Sequence[Rating],
    *,
    labels: dict[str, str] | None = None,
    include_flagged: bool = False,
) -> Summary:
    """MOS per configuration and per (configuration, instrument) of the test ratings, without
    flagged listeners unless ``include_flagged``; ``labels`` names the configurations."""
    labels = labels or {}
    flagged = flag_listeners(ratings)
    used = [
        r for r in ratings if r.phase == "test" and (include_flagged or r.listener not in flagged)
    ]
    groups: dict[tuple[str, str | None], list[Rating]] = defaultdict(list)
    for r in used:
        groups[r.config, None].append(r)
        groups[r.config, r.instrument].append(r)
    rows = {
        key: Row(
            key[0],
            key[1],
            labels.get(key[0], key[0]),
            group[0].role,
            len({r.listener for r in group}),
            mos([r.score for r in group]),
            PAPER_MOS.get(key[0]),
        )
        for key, group in groups.items()
    }
    configs = sorted(
        (r for r in rows.values() if r.instrument is None), key=lambda r: (-r.mos.mean, r.config)
    )
    rank = {r.config: i for i, r in enumerate(configs)}
    per_instrument = sorted(
        (r for r in rows.values() if r.instrument is not None),
        key=lambda r: (rank[r.config], r.instrument),
    )
    return Summary(
        configs,
        per_instrument,
        len({r.listener for r in used}),
        len(used),
        flagged,
        include_flagged,
    )
