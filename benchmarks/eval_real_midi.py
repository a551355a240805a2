"""How far the predicted log-mel is from FluidSynth's rendering, on real MIDI files.

An evaluation outside the training corpus: give it MIDI files the project never trains or
tunes on (performed piano with velocity dynamics and sustain pedal, real multi-track songs),
and for every file x instrument it compares the acoustic model's mel with the log-mel of the
same notes rendered by FluidSynth, both over the first ``--seconds`` of the file:

* the reference is the program-forced MIDI (:func:`mel2mel.data.fluidsynth.force_program`)
  rendered with :func:`~mel2mel.data.fluidsynth.render_midi` and analysed with
  :func:`mel2mel.audio.log_mel`, exactly as the dataset builder does; the file is cut a
  little after ``--seconds`` first (synthesis is causal, so the frames kept do not change).
  Renders are cached under ``--cache`` by file hash, program and settings;
* the prediction is :meth:`mel2mel.Synthesizer.mel` with ``timbre`` = the instrument name;
* metrics are those of ``mel2mel evaluate acoustic``
  (:class:`mel2mel.evaluation.report.BinStats`): per-bin Pearson r over all frames of a
  group, averaged over the bins that are not constant, and the mean absolute log-mel error
  in dB; groups are instruments, files and the velocity band of each frame
  (:func:`mel2mel.evaluation.acoustic.frame_groups`: pp < 40, mf 40-89, ff >= 90 by the
  loudest sounding note; frames where nothing sounds belong to no band).

Usage::

    OMP_NUM_THREADS=1 python3 benchmarks/eval_real_midi.py --midi-dir DIR \\
        --model pretrained --model paper --out report.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import mido
import numpy as np

from mel2mel import Synthesizer
from mel2mel import constants as C
from mel2mel.audio import log_mel
from mel2mel.data.corpus import resolve_instruments
from mel2mel.data.fluidsynth import DEFAULT_SOUNDFONT, RenderSettings, force_program, render_midi
from mel2mel.evaluation.acoustic import VELOCITY_BANDS, BinStats, frame_groups
from mel2mel.midi import midi_to_roll

CACHE_VERSION = 1  # bump when the reference changes, so old renders are not reused
MARGIN_SECONDS = 0.5  # rendered past --seconds so the last frames' windows see real audio
MIDI_SUFFIXES = (".mid", ".midi", ".kar")
OFF_CCS = (64, 66, 123)  # sustain and sostenuto pedals up, all notes off


def midi_files(inputs: list[Path]) -> list[Path]:
    """The MIDI files named or found (recursively) in folders, sorted."""
    out: list[Path] = []
    for p in inputs:
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in MIDI_SUFFIXES)
        else:
            out.append(p)
    return out


def truncate(midi: mido.MidiFile, seconds: float) -> mido.MidiFile:
    """Copy of ``midi`` without the events after ``seconds`` (tempo map followed)."""
    tempos = sorted(
        (tick, msg.tempo)
        for track in midi.tracks
        for tick, msg in zip(np.cumsum([m.time for m in track]).tolist(), track, strict=True)
        if msg.type == "set_tempo"
    )
    tick, t, tempo = 0, 0.0, 500_000
    for at, new in tempos:
        dt = mido.tick2second(at - tick, midi.ticks_per_beat, tempo)
        if t + dt >= seconds:
            break
        tick, t, tempo = at, t + dt, new
    cutoff = tick + mido.second2tick(seconds - t, midi.ticks_per_beat, tempo)
    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat, charset=midi.charset)
    for track in midi.tracks:
        new_track, now, last, sounding = mido.MidiTrack(), 0, 0, set()
        for msg in track:
            now += msg.time
            if now > cutoff:
                break
            if msg.type == "end_of_track":
                continue
            new_track.append(msg.copy(time=now - last))
            last = now
            if msg.type in ("note_on", "note_off"):
                on = msg.type == "note_on" and msg.velocity > 0
                (sounding.add if on else sounding.discard)((msg.channel, msg.note))
        # Release what still sounds: FluidSynth renders until every voice has ended, and a
        # looped sample held without a note-off (or a pedal left down) never ends.
        tail = [mido.Message("note_off", channel=c, note=k) for c, k in sorted(sounding)]
        tail += [
            mido.Message("control_change", channel=c, control=cc)
            for c in range(16)
            for cc in OFF_CCS
        ]
        for i, msg in enumerate(tail):
            new_track.append(msg.copy(time=cutoff - last if i == 0 else 0))
        new_track.append(mido.MetaMessage("end_of_track", time=0))
        out.tracks.append(new_track)
    return out


def reference_mel(
    path: Path, program: int, seconds: float, settings: RenderSettings, cache: Path
) -> np.ndarray:
    """FluidSynth's log-mel ``float32[N_MELS x T]`` of ``path`` played by ``program``."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    key = json.dumps([CACHE_VERSION, seconds, MARGIN_SECONDS, settings.to_dict()])
    item = cache / f"{digest}-p{program:03d}-{hashlib.sha256(key.encode()).hexdigest()[:8]}.npy"
    if item.is_file():
        return np.load(item)
    forced, _ = force_program(truncate(mido.MidiFile(str(path)), seconds + MARGIN_SECONDS), program)
    cache.mkdir(parents=True, exist_ok=True)
    mel = log_mel(render_midi(forced, settings, work_dir=cache, name=digest))
    tmp = item.with_suffix(".tmp.npy")
    np.save(tmp, mel)
    tmp.replace(item)
    return mel


def describe(path: Path, seconds: float) -> dict[str, Any]:
    """Whether a file looks performed: velocities, pedal and volume events, for the whole
    file and (``window_*``) its first ``seconds``."""
    now, out = 0.0, {}
    vel: dict[bool, list[int]] = {False: [], True: []}
    cc: dict[bool, list[int]] = {False: [], True: []}
    for msg in mido.MidiFile(str(path)):
        now += msg.time
        for scope in {False, now < seconds}:
            if msg.type == "note_on" and msg.velocity > 0:
                vel[scope].append(msg.velocity)
            elif msg.type == "control_change":
                cc[scope].append(msg.control)
    for scope, pre in ((False, ""), (True, "window_")):
        v, c = vel[scope], cc[scope]
        out[pre + "notes"] = len(v)
        out[pre + "velocity"] = [min(v, default=0), max(v, default=0)]
        out[pre + "cc64"] = c.count(64)
    out.update(seconds=round(now, 1), velocities=len(set(vel[False])))
    out.update(cc7=cc[False].count(7), cc11=cc[False].count(11))
    return out


def metrics(stats: BinStats) -> dict[str, Any]:
    """Mean per-bin r (constant bins skipped), the same over the bins where FluidSynth has sound
    in at least half the frames (``BinStats.sounding_bins``), MAE in dB and frame count."""
    r = stats.correlation()
    mean_r = float(np.nanmean(r)) if np.isfinite(r).any() else None
    r_sounding, bins = stats.sounding_correlation()
    return {
        "r": mean_r,
        "r_sounding": r_sounding,
        "sounding_bins": bins,
        "mae_db": stats.mae_db(),
        "frames": stats.n,
    }


def load_variants(
    models: list[str], textures: list[float], sharpens: list[float], beats: float = 1.0
) -> list[tuple[str, Synthesizer, float]]:
    """``(label, synthesizer, texture strength)`` for every model x detail gain strength x
    texture strength, with the models' note beats at ``beats``."""
    out = []
    for name in models:
        path = None if name in ("pretrained", "shipped") else name
        for sharpen in sharpens:
            synth = Synthesizer.from_pretrained(
                path, vocoder="griffinlim", sharpen=sharpen, beats=beats
            )
            for strength in textures:
                if strength and synth.texture is None:
                    print(f"note: {name} has no texture post-net; t={strength:g} skipped",
                          file=sys.stderr)  # fmt: skip
                    continue
                label = name if sharpens == [1.0] else f"{name} s={sharpen:g}"
                label = label if textures == [0.0] else f"{label} t={strength:g}"
                out.append((label, synth, strength))
    return out


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run every file x instrument x variant; the JSON report."""
    files = midi_files(args.midi)
    if not files:
        raise SystemExit("no MIDI files found")
    instruments = resolve_instruments(args.instruments)
    variants = load_variants(
        args.model or ["pretrained"], args.texture or [0.0], args.sharpen or [1.0], args.beats
    )
    settings = RenderSettings(soundfont=str(args.soundfont))
    groups: dict[tuple[str, str, str], BinStats] = defaultdict(BinStats)
    items = []
    for path in files:
        print(f"{path.name}: ", end="", file=sys.stderr, flush=True)
        frames = round(args.seconds * C.FRAME_RATE)
        masks = frame_groups(midi_to_roll(path, frames), frames)
        for inst in instruments:
            own = settings if inst.soundfont is None else RenderSettings(inst.soundfont)
            true = reference_mel(path, inst.program, args.seconds, own, args.cache)
            for label, synth, strength in variants:
                pred = synth.mel(path, timbre=inst.name, duration=args.seconds, texture=strength)
                n = min(frames, true.shape[1], pred.shape[1])
                p, t = pred[:, :n], true[:, :n]
                one = BinStats()
                one.update(p, t)
                items.append(
                    {"file": path.name, "instrument": inst.name, "model": label, **metrics(one)}
                )
                for key in (("all", "all"), ("instrument", inst.name), ("file", path.name)):
                    groups[(label, *key)].update(p, t)
                for band in VELOCITY_BANDS:
                    m = masks[band][:n]
                    if m.any():
                        groups[(label, "band", band)].update(p[:, m], t[:, m])
            print(".", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    summary = {
        label: {
            kind: {
                name: metrics(s) for (lb, k, name), s in groups.items() if lb == label and k == kind
            }
            for kind in ("all", "instrument", "file", "band")
        }
        for label, _, _ in variants
    }
    return {
        "settings": {
            "seconds": args.seconds,
            "soundfont": str(args.soundfont),
            "instruments": [i.name for i in instruments],
            "models": [v[0] for v in variants],
        },
        "files": {str(p): describe(p, args.seconds) for p in files},
        "summary": summary,
        "items": items,
    }


def print_tables(report: dict[str, Any]) -> None:
    """Side-by-side tables per instrument, file and velocity band (r / MAE dB per model)."""
    models = report["settings"]["models"]
    seconds = report["settings"]["seconds"]
    print(f"\nfiles (whole file; first {seconds:g} s in brackets):")
    for path, d in report["files"].items():
        v, w = d["velocity"], d["window_velocity"]
        print(
            f"  {Path(path).name:28s} {d['seconds']:7.1f} s  vel {v[0]:3d}-{v[1]:3d} "
            f"[{w[0]:3d}-{w[1]:3d}] ({d['velocities']:3d} values)  "
            f"CC64 {d['cc64']:4d} [{d['window_cc64']:3d}]  CC7 {d['cc7']:4d}  CC11 {d['cc11']:4d}"
        )
    head = "".join(f" | {m[:20]:>20s}" for m in models)
    sub = "".join(f" | {'r':>8s} {'MAE dB':>11s}" for _ in models)
    for kind, title in (
        ("instrument", "instrument"),
        ("file", "file"),
        ("band", "velocity band"),
        ("all", "all"),
    ):
        names = list(report["summary"][models[0]][kind])
        if kind == "band":
            names = [b for b in VELOCITY_BANDS if b in names]
        print(f"\n{title:32s}{head}\n{'':32s}{sub}")
        for name in names:
            cells = ""
            for m in models:
                g = report["summary"][m][kind].get(name)
                r = "-" if g is None or g["r"] is None else f"{g['r']:8.3f}"
                cells += f" | {r:>8s} {g['mae_db'] if g else float('nan'):11.2f}"
            frames = report["summary"][models[0]][kind][name]["frames"]
            label = f"{name} ({frames} fr)" if kind == "band" else name
            print(f"{label[:32]:32s}{cells}")
        if kind == "band":  # r over the bins where FluidSynth has sound in half the frames
            for name in names:
                cells = ""
                for m in models:
                    g = report["summary"][m][kind][name]
                    r = "-" if g["r_sounding"] is None else f"{g['r_sounding']:8.3f}"
                    cells += f" | {r:>8s} {g['sounding_bins']:5d} bins"
                print(f"{name + ', bins with sound':32s}{cells}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("midi", nargs="*", type=Path, help="MIDI files or folders")
    p.add_argument("--midi-dir", type=Path, action="append", default=[], help="folder (repeatable)")
    p.add_argument(
        "--model", action="append", help="'pretrained' (default), 'paper' or an export (repeatable)"
    )
    p.add_argument(
        "--instruments",
        help="comma-separated names or programs, or a named set such as space100, whose "
        "instruments are rendered with their own SoundFonts (default: the paper's ten)",
    )
    p.add_argument("--seconds", type=float, default=20.0, help="first N seconds of every file")
    p.add_argument(
        "--texture", type=float, action="append", help="texture strength (repeatable; 0)"
    )
    p.add_argument(
        "--sharpen",
        type=float,
        action="append",
        help="strength of the model's detail gains (repeatable; 1, as the synthesizer renders)",
    )
    p.add_argument(
        "--beats", type=float, default=1.0, help="strength of the models' note beats (1)"
    )
    p.add_argument("--soundfont", type=Path, default=DEFAULT_SOUNDFONT)
    cache = Path(tempfile.gettempdir()) / "mel2mel-eval-real-midi"
    p.add_argument("--cache", type=Path, default=cache, help=f"render cache (default: {cache})")
    p.add_argument("--out", type=Path, help="write the JSON report here")
    args = p.parse_args(argv)
    args.midi = args.midi + args.midi_dir
    report = evaluate(args)
    print_tables(report)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
