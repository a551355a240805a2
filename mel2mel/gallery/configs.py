"""The columns of a gallery: what each configuration renders, and how ``--config`` names one.

A configuration is one way of making a clip from a test track for one instrument, as in the
paper's listening test: the reference itself, a degraded copy of it, a vocoder on the
ground-truth mel (copy synthesis), or an acoustic model's prediction through a vocoder, with
the texture post-net at some strength. ``--config`` spells one as::

    NAME                      a built-in: original, mulaw8, anchor, or a default column name
    NAME=MODEL:VOCODER[:TEXTURE]

``MODEL`` is ``truth`` (FluidSynth's own mel), ``pretrained``, ``paper`` or the path of an
acoustic export; ``VOCODER`` is ``fast``, ``wavenet``, ``griffinlim`` or an exported vocoder's
path; ``TEXTURE`` the post-net strength (``0``: none; default: the model's own).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mel2mel.errors import UserError
from mel2mel.listening.site import ROLES

KINDS = ("original", "mulaw8", "anchor", "vocoder", "model")
REFERENCE_KINDS = ("original", "mulaw8", "anchor")
ANCHOR_CUTOFF_HZ = 3500.0  # MUSHRA's low anchor: the reference low-passed at 3.5 kHz


@dataclass(frozen=True)
class ClipConfig:
    """One column of the gallery.

    Attributes
    ----------
    name:
        Column id (letters, digits, ``-``, ``_``), used in file names and in the listening test.
    kind:
        ``"original"``, ``"mulaw8"``, ``"anchor"``, ``"vocoder"`` (a vocoder on the true mel)
        or ``"model"`` (an acoustic model's mel through a vocoder).
    model:
        ``"pretrained"``, ``"paper"`` or an export path (kind ``"model"`` only).
    vocoder:
        Vocoder kind or path (kinds ``"vocoder"`` and ``"model"``).
    texture:
        Texture post-net strength, ``None`` for the model's own (kind ``"model"``).
    label, description:
        What the page shows in the column's header.
    role:
        One of :data:`mel2mel.listening.site.ROLES`: the listening test's hidden reference,
        its low anchor, or a system.
    hidden:
        Rendered (for the listening test) but not shown as a column of the page.
    """

    name: str
    kind: str
    model: str | None = None
    vocoder: str | None = None
    texture: float | None = None
    label: str = ""
    description: str = ""
    role: str = "system"
    hidden: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.role not in ROLES:
            raise ValueError(f"kind must be one of {KINDS} and role one of {ROLES}")

    def spec(self) -> str:
        """The settings that decide the clip's samples (a rendered clip is reused only if its
        stored spec equals this)."""
        if self.kind in REFERENCE_KINDS:
            return self.kind
        return f"{self.kind}:{self.model}:{self.vocoder}:{self.texture}"

    def to_json(self) -> dict[str, Any]:
        """The fields that ``gallery.json`` records (the page's and the test's view)."""
        d = asdict(self)
        return {k: d[k] for k in ("name", "label", "role", "hidden", "description")} | {
            "spec": self.spec()
        }


BUILTIN: dict[str, ClipConfig] = {
    c.name: c
    for c in (
        ClipConfig("original", "original", label="Original (FluidSynth)", role="reference",
                   description="FluidSynth's render of the MIDI with the SoundFont: the "
                   "training target"),
        ClipConfig("mulaw8", "mulaw8", label="8-bit mu-law",
                   description="the original quantized to 256 mu-law levels, the WaveNet's "
                   "output resolution"),
        ClipConfig("anchor", "anchor", label="Anchor (3.5 kHz low-pass)", role="anchor",
                   hidden=True, description="the original low-passed at 3.5 kHz: the "
                   "listening test's low anchor"),
        ClipConfig("fast-true", "vocoder", vocoder="fast", label="Fast vocoder, true mel",
                   description="our fast vocoder on FluidSynth's own mel (copy synthesis)"),
        ClipConfig("wavenet-true", "vocoder", vocoder="wavenet", label="WaveNet, true mel",
                   description="the paper's WaveNet on FluidSynth's own mel"),
        ClipConfig("griffinlim-true", "vocoder", vocoder="griffinlim",
                   label="Griffin-Lim, true mel",
                   description="Griffin-Lim phase recovery on FluidSynth's own mel"),
        ClipConfig("model-log-abs", "model", model="pretrained", vocoder="fast", texture=0.0,
                   label="Mel2Mel log-abs", description="the shipped model (log-abs loss), "
                   "fast vocoder, no texture post-net"),
        ClipConfig("model-log-abs-texture", "model", model="pretrained", vocoder="fast",
                   label="Mel2Mel log-abs + texture", description="the shipped model with "
                   "its texture post-net at its default strength, fast vocoder"),
        ClipConfig("model-tanh-log-abs", "model", model="paper", vocoder="fast", texture=0.0,
                   label="Mel2Mel tanh-log-abs", description="the paper's-loss model "
                   "(tanh-log-abs), fast vocoder, no texture post-net"),
    )
}  # fmt: skip


def default_configs(wavenet: bool) -> list[ClipConfig]:
    """The default columns; the WaveNet one only when ``wavenet`` (it generates at about real
    time on two CPU cores, too slow for the default gallery without a GPU)."""
    return [c for c in BUILTIN.values() if wavenet or c.name != "wavenet-true"]


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")


def parse_config(text: str) -> ClipConfig:
    """A ``--config`` value as a :class:`ClipConfig` (see the module's docstring).

    Raises UserError for a malformed value, naming what is wrong and what is valid.
    """
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise UserError(
            f"--config {text!r}: the name must be letters, digits, '-' or '_' (at most 48)"
        )
    if not sep:
        if name not in BUILTIN:
            raise UserError(
                f"--config {name!r} is not a built-in configuration; use one of "
                f"{', '.join(BUILTIN)} or NAME=MODEL:VOCODER[:TEXTURE]"
            )
        return BUILTIN[name]
    if name in REFERENCE_KINDS:
        raise UserError(f"--config {name!r} is reserved for the built-in reference clip")
    parts = rest.split(":")
    # A Windows drive letter or a path with ':' is not supported: paths are split on ':'.
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise UserError(f"--config {text!r}: expected NAME=MODEL:VOCODER[:TEXTURE]")
    model, vocoder = parts[0], parts[1]
    texture = None
    if len(parts) == 3 and parts[2] != "":
        try:
            texture = float(parts[2])
        except ValueError:
            raise UserError(f"--config {text!r}: TEXTURE must be a number") from None
        if not 0.0 <= texture <= 4.0:
            raise UserError(f"--config {text!r}: TEXTURE must be between 0 and 4")
    if model == "truth":
        return ClipConfig(name, "vocoder", vocoder=vocoder, label=name,
                          description=f"vocoder {vocoder} on the true mel")  # fmt: skip
    what = f"model {model}, vocoder {vocoder}, texture {'default' if texture is None else texture}"
    return ClipConfig(name, "model", model=model, vocoder=vocoder, texture=texture, label=name,
                      description=what)  # fmt: skip


def check_configs(configs: list[ClipConfig]) -> list[ClipConfig]:
    """``configs`` with the reference first; UserError for repeated names or no reference."""
    names = [c.name for c in configs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"--config names must be unique; repeated: {', '.join(repeated)}")
    if "original" not in names:
        configs = [BUILTIN["original"], *configs]  # every other clip is judged against it
    return sorted(configs, key=lambda c: c.role != "reference")
