"""A dataset's ``manifest.json``: rebuilt from the finished files on disk, and summarised.

The manifest is never edited in place: :func:`index_dataset` reads every finished piece and
item (their JSON sidecars) and writes it anew, so shards built into copies of the folder merge
by copying and re-indexing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mel2mel import constants as C
from mel2mel.data import dataset as D
from mel2mel.data.fluidsynth import RenderSettings
from mel2mel.data.items import save_json
from mel2mel.errors import UserError
from mel2mel.instruments import Instrument


def manifest_summary(manifest: dict[str, Any], root: Path) -> str:
    """One line: where the manifest is and what it lists."""
    counts = {s: sum(it["split"] == s for it in manifest["items"]) for s in D.SPLITS}
    split = " / ".join(f"{s} {n}" for s, n in counts.items())
    clipped = sum(it["clipped"] > 0 for it in manifest["items"])
    return (
        f"manifest: {root / D.MANIFEST} ({len(manifest['pieces'])} piece(s), "
        f"{len(manifest['items'])} item(s): {split}; {clipped} clipped, "
        f"{len(manifest['skipped'])} skipped input(s))"
    )


def index_dataset(
    root: str | os.PathLike,
    *,
    instruments: Sequence[Instrument] | None = None,
    settings: RenderSettings | None = None,
) -> dict[str, Any]:
    """Rebuild ``manifest.json`` from the finished files under ``root`` and return it.

    Instruments are identified by name (their items' file names derive from it). They are
    ordered as in the previous manifest, then as in ``instruments``, then by program and name,
    so that item ``"instrument"`` indices stay stable across rebuilds. An instrument rendered
    with its own SoundFont lists it (``"soundfont"``); if the items use several SoundFonts the
    top-level ``"soundfont"`` (and ``render["soundfont"]``) is ``null``.
    """
    root = Path(root)
    if not (root / D.ROLLS).is_dir() and not (root / D.ITEMS).is_dir():
        raise UserError(f"{root} is not a mel2mel dataset folder (no rolls/ or items/)")
    old = D.read_json(root / D.MANIFEST) or {}
    pieces: dict[str, dict[str, Any]] = {}
    versions: dict[str, set[str]] = {}
    for path in sorted((root / D.ROLLS).glob("*.json")):
        meta = D.finished_piece(root, path.stem)
        if meta is not None:
            keys = ("id", "source", "split", "frames", "group", "augment")
            pieces[path.stem] = {k: meta[k] for k in keys if k in meta}
            for tool, version in (meta.get("versions") or {}).items():
                versions.setdefault(tool, set()).add(version)
    metas = []
    for piece in pieces:
        for path in sorted((root / D.ITEMS / piece).glob("[!.]*.json")):
            meta = D.finished_item(root, f"{piece}/{path.stem}")
            if meta is not None:
                metas.append(meta)

    known: dict[str, dict[str, Any]] = {}
    for m in metas:
        known.setdefault(m["instrument"]["name"], m["instrument"])
    order: list[str] = []
    hints = [i["name"] for i in old.get("instruments", [])]
    hints += [i.name for i in instruments or []]
    by_program = sorted(known, key=lambda n: (known[n]["program"], n))
    for name in [*hints, *by_program]:
        if name in known and name not in order:
            order.append(name)
    index = {name: i for i, name in enumerate(order)}
    items = [
        {
            "id": m["id"],
            "piece": m["piece"],
            "instrument": index[m["instrument"]["name"]],
            "split": pieces[m["piece"]]["split"],
            "frames": m["frames"],
            "samples": m["samples"],
            "peak": m["peak"],
            "clipped": m["clipped"],
        }
        for m in metas
    ]
    items.sort(key=lambda it: (it["piece"], it["instrument"]))
    skipped = []
    for path in sorted((root / D.SKIPPED).glob("[!.]*.json")):
        marker = D.read_json(path)
        if marker is not None and path.stem not in pieces:
            skipped.append({k: str(marker.get(k)) for k in ("source", "reason")})
    render = settings.to_dict() if settings else metas[0]["render"] if metas else old.get("render")
    if len({m["render"].get("soundfont") for m in metas}) > 1:
        render = {**(render or {}), "soundfont": None}  # each instrument lists its own
    manifest = {
        "format": D.FORMAT,
        "sample_rate": C.SAMPLE_RATE,
        "hop_length": C.HOP_LENGTH,
        "n_mels": C.N_MELS,
        "soundfont": (render or {}).get("soundfont", old.get("soundfont")),
        "render": render,
        "instruments": [
            {k: known[name][k] for k in ("name", "program", "soundfont") if k in known[name]}
            for name in order
        ],
        "pieces": list(pieces.values()),
        "items": items,
        "versions": {tool: sorted(v) for tool, v in sorted(versions.items())},
        "skipped": skipped,
    }
    save_json(root / D.MANIFEST, manifest)
    return manifest
