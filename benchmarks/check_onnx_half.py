"""What storing the in-page graphs' weights (and traced constants) as float16 costs.

Exports the shipped acoustic model and fast vocoder as the site does, three ways: float32,
float16 initializers only, and float16 initializers and large traced constants (the harmonic
detail's combs, the vocoder's STFT tables; the default since stop 22). Runs each with
onnxruntime on the example chorale (8 s) and prints its size and its outputs' error against
the float32 graph: the acoustic log-mel in dB, the vocoder's magnitude in dB and its phase
steps in radians.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/check_onnx_half.py
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from mel2mel.examples import write_example
from mel2mel.midi import piano_roll, read_notes
from mel2mel.models import load_acoustic
from mel2mel.models.export import load_vocoder
from mel2mel.models.onnx_export import acoustic_onnx, halve_vocoder, halve_weights, vocoder_onnx
from mel2mel.pretrained import path as pretrained_path

FRAMES = 1000  # 8 s
DB_PER_NEPER = 20 / np.log(10)


def run(graph: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def variants(full: bytes, halve: Callable[[Any, bool], Any]) -> dict[str, bytes]:
    """float32, float16 initializers, float16 initializers and constants."""
    return {
        "float32": full,
        "float16 weights": halve(onnx.load_from_string(full), False).SerializeToString(),
        "float16 weights + constants": halve(onnx.load_from_string(full), True).SerializeToString(),
    }


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        notes = read_notes(write_example(Path(tmp) / "example.mid")).notes
    roll = piano_roll(notes, FRAMES)[None].astype(np.float32)
    model = load_acoustic(pretrained_path("acoustic"))
    emb = model.embedding.weight[3][None].detach().numpy()
    channels = np.flatnonzero(roll[0].max(1) > 0)
    feeds = {"roll": roll[:, channels], "channels": channels, "embedding": emb}
    graphs = variants(acoustic_onnx(model, half=False), lambda p, c: halve_weights(p, (), c))
    ref = None
    print(f"acoustic model, {FRAMES} frames: size, log-mel error against float32 (dB)")
    for name, graph in graphs.items():
        mel = run(graph, feeds)[0]
        ref = mel if ref is None else ref
        err = np.abs(mel - ref) * DB_PER_NEPER
        size = len(graph) / 1e6
        print(f"  {name:<28} {size:6.3f} MB  mean {err.mean():.5f}  max {err.max():.4f}")

    voc = load_vocoder(pretrained_path("fast_vocoder"))
    feeds = {"mel": ref.astype(np.float32), "roll": roll}
    graphs = variants(vocoder_onnx(voc, half=False), lambda p, c: halve_vocoder(p, voc, c))
    base = None
    print("fast vocoder on that mel: size, magnitude error (dB) and phase-step error (rad)")
    for name, graph in graphs.items():
        magnitude, _, step = run(graph, feeds)
        base = (magnitude, step) if base is None else base
        mag = np.abs(np.log(np.maximum(magnitude, 1e-5) / np.maximum(base[0], 1e-5)))
        print(
            f"  {name:<28} {len(graph) / 1e6:6.3f} MB  magnitude mean "
            f"{mag.mean() * DB_PER_NEPER:.5f} dB, phase step mean "
            f"{np.abs(step - base[1]).mean():.2e} rad"
        )
    print("(the graphs compute in float32 in every case; only what they store differs)")


if __name__ == "__main__":
    main()
