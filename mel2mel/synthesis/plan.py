"""A render request, read and checked before any audio is made (errors come first)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.errors import UserError
from mel2mel.midi import MidiSource, Note, NoteSequence, log_gain, read_notes, time_to_frame
from mel2mel.synthesis.notes import NoteRoll, split_parts
from mel2mel.timbre.space import TimbreSpace
from mel2mel.timbre.spec import Timbre, TimbreSpec, parse_time


@dataclass
class Plan:
    """A checked render request: timbre groups and the frame range ``[first, stop)``."""

    groups: list[tuple[NoteRoll, Timbre]]
    total: int
    first: int
    stop: int
    texture: float


def check_strength(value: float, what: str = "texture strength") -> float:
    """``value`` as a float, checked to be a strength (0 to 4) of ``what``."""
    strength = float(value)
    if not 0.0 <= strength <= 4.0:
        raise UserError(f"{what} must be between 0 and 4, got {value}")
    return strength


def plan_render(
    timbres: TimbreSpace,
    default_strength: float,
    midi: MidiSource | NoteSequence,
    timbre: TimbreSpec | None,
    tracks: Mapping[int, TimbreSpec] | None,
    start: float | str | None,
    duration: float | str | None,
    tail: float | str,
    texture: float | None = None,
) -> Plan:
    """Read and check everything before any audio is made (errors come first)."""
    seq = midi if isinstance(midi, NoteSequence) else read_notes(midi)
    main = timbres.resolve(timbre)
    total = seq.num_frames() + round(parse_time(tail) * C.FRAME_RATE)
    begin = 0.0 if start is None else parse_time(start)
    first = time_to_frame(begin)
    if first >= total:
        raise UserError(
            f"start {start} is past the end of the piece ({total / C.FRAME_RATE:.2f} s)"
        )
    stop = total
    if duration is not None:
        seconds = parse_time(duration)
        if seconds <= 0:
            raise UserError("duration must be positive")
        stop = min(total, max(first + 1, time_to_frame(begin + seconds)))
    groups: list[tuple[Sequence[Note], Timbre]] = [(seq.notes, main)]
    if tracks:
        kind, parts = split_parts(seq)
        chosen: dict[int, Timbre] = {}
        for key, spec in tracks.items():
            k = validate.program_number(str(key).strip())  # a track number, ASCII digits
            k = -1 if k is None else k
            if k not in parts:
                have = ", ".join(f"{p} ({len(n)} notes)" for p, n in sorted(parts.items()))
                raise UserError(f"{kind} {key!r} has no notes; {kind}s with notes: {have}")
            chosen[k] = timbres.resolve(spec)
        rest = [n for p, notes in parts.items() if p not in chosen for n in notes]
        groups = [(rest, main)] if rest else []
        groups += [(parts[k], t) for k, t in sorted(chosen.items())]
    strength = default_strength if texture is None else check_strength(texture)
    rolls = [(NoteRoll(n, total, log_gain(n, seq.volume, total)), t) for n, t in groups]
    return Plan(rolls, total, first, stop, strength)
