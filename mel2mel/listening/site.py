"""Reading a gallery folder's ``gallery.json`` for the listening test.

The file (written by ``mel2mel gallery build``) lists the configurations (``original``,
``mulaw8``, the models...) with a role each, and one clip per (track, instrument,
configuration) whose ``audio`` path is relative to the folder. The listening test needs:
exactly one ``reference`` configuration (the original, rated by attentive listeners near the
top), at most one ``anchor`` (a degraded clip rated near the bottom), the rest ``system``.
Everything is checked here once, so that the server and the design never meet a clip that
does not play: paths must stay inside the folder and name existing files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from mel2mel.errors import UserError

FORMAT = "mel2mel-gallery"
VERSION = 1
ROLES = ("reference", "anchor", "system")


class ClipKey(NamedTuple):
    """What a clip is: a track, an instrument and a configuration."""

    track: str
    instrument: str
    config: str


@dataclass(frozen=True)
class Config:
    """A column of the gallery: its ``name``, a human ``label`` and its ``role``."""

    name: str
    label: str
    role: str


@dataclass(frozen=True)
class Site:
    """A gallery folder: its configurations (in the file's order) and its clips' audio files.

    ``audio`` maps each clip to its absolute path (checked to exist and to lie inside
    ``root``).
    """

    root: Path
    title: str
    configs: dict[str, Config]
    audio: dict[ClipKey, Path]

    @property
    def reference(self) -> str:
        """The name of the reference configuration (the original)."""
        return next(c.name for c in self.configs.values() if c.role == "reference")

    @property
    def anchor(self) -> str | None:
        """The name of the anchor configuration, or ``None`` when the gallery has none."""
        return next((c.name for c in self.configs.values() if c.role == "anchor"), None)

    def select(self, names: list[str] | None) -> Site:
        """This site with only the configurations ``names`` (and always the reference and the
        anchor, the attention checks); ``None`` keeps all."""
        if names is None:
            return self
        unknown = [n for n in names if n not in self.configs]
        if unknown:
            known = ", ".join(self.configs)
            raise UserError(f"no configuration {unknown[0]!r} in the gallery; it has {known}")
        keep = {n for n, c in self.configs.items() if n in names or c.role != "system"}
        configs = {n: c for n, c in self.configs.items() if n in keep}
        audio = {k: p for k, p in self.audio.items() if k.config in keep}
        return Site(self.root, self.title, configs, audio)


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"gallery.json: {where} needs a non-empty string {key!r}")
    return value


def _configs(data: dict[str, Any]) -> dict[str, Config]:
    entries = data.get("configs")
    if not isinstance(entries, list) or not entries:
        raise UserError("gallery.json: 'configs' must be a non-empty list")
    configs: dict[str, Config] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UserError(f"gallery.json: configs[{i}] must be an object")
        name = _text(entry, "name", f"configs[{i}]")
        role = entry.get("role", "system")
        if role not in ROLES:
            raise UserError(
                f"gallery.json: configuration {name!r} has role {role!r}; "
                f"use one of {', '.join(ROLES)}"
            )
        if name in configs:
            raise UserError(f"gallery.json: configuration {name!r} is listed twice")
        configs[name] = Config(name, str(entry.get("label") or name), role)
    roles = [c.role for c in configs.values()]
    if roles.count("reference") != 1:
        raise UserError(
            "gallery.json: exactly one configuration must have role 'reference' "
            f"(the original); found {roles.count('reference')}"
        )
    if roles.count("anchor") > 1:
        raise UserError("gallery.json: at most one configuration may have role 'anchor'")
    return configs


def _audio_path(root: Path, entry: dict[str, Any], where: str) -> Path:
    rel = _text(entry, "audio", where)
    path = (root / rel).resolve()
    if Path(rel).is_absolute() or not path.is_relative_to(root):
        raise UserError(f"gallery.json: {where}: audio path {rel!r} leaves the gallery folder")
    if not path.is_file():
        raise UserError(f"gallery.json: {where}: audio file {rel!r} is missing")
    return path


def load_site(folder: str | Path) -> Site:
    """Read and check ``folder/gallery.json`` (module docstring); raises ``UserError``."""
    root = Path(folder).resolve()
    index = root / "gallery.json"
    if not index.is_file():
        raise UserError(f"{folder} is not a gallery folder (no gallery.json)")
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{index}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{index}: not a mel2mel gallery (format must be {FORMAT!r})")
    if data.get("version") != VERSION:
        raise UserError(
            f"{index}: gallery version {data.get('version')!r}; this mel2mel "
            f"reads version {VERSION}"
        )
    configs = _configs(data)
    clips = data.get("clips")
    if not isinstance(clips, list) or not clips:
        raise UserError("gallery.json: 'clips' must be a non-empty list")
    audio: dict[ClipKey, Path] = {}
    for i, entry in enumerate(clips):
        where = f"clips[{i}]"
        if not isinstance(entry, dict):
            raise UserError(f"gallery.json: {where} must be an object")
        key = ClipKey(*(_text(entry, k, where) for k in ("track", "instrument", "config")))
        if key.config not in configs:
            raise UserError(f"gallery.json: {where} names an unknown configuration {key.config!r}")
        audio[key] = _audio_path(root, entry, where)
    title = str(data.get("title") or "mel2mel listening test")
    return Site(root, title, configs, audio)
