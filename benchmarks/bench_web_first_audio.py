"""Click -> first audio, measured on the real page in headless chromium (Playwright).

Starts the app (shipped acoustic model, one torch thread per render, niced) in a child
process, opens the page, uploads each piece through the file input, and clicks points of the
timbre map. The time is the page's own: from the click handler to the moment the first
scheduled audio buffer starts playing in the AudioContext (``window.m2m.player``).

    python benchmarks/bench_web_first_audio.py [--clicks 5] [--vocoders fast,griffinlim]
        [--stand-in-fast] [--cpu]

``--cpu`` instead measures, in process, the CPU time of the render until its first chunk.

Target: first audio within 1.5 s of the click for any piece, fast vocoder, 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench_web_common import random_piece, served_app

CHROMIUM = "/usr/bin/chromium"
POINTS = [(0.3, 0.3), (0.7, 0.6), (0.5, 0.8), (0.2, 0.7), (0.8, 0.25), (0.45, 0.45)]


def measure(page, piece: bytes, name: str, start: float, vocoder: str, clicks: int) -> list[float]:
    """Upload ``piece``, then click ``clicks`` map points; the latencies in ms."""
    page.set_input_files("#file", files=[{"name": name, "mimeType": "audio/midi", "buffer": piece}])
    page.wait_for_function(f"document.getElementById('piece-info').textContent.includes({name!r})")
    page.fill("#start", str(start))
    page.fill("#end", "")
    page.select_option("#vocoder", vocoder)
    box = page.locator("#map").bounding_box()
    out = []
    for k in range(clicks):
        fx, fy = POINTS[k % len(POINTS)]
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function("window.m2m.player.firstAudioAt > 0", timeout=60_000)
        out.append(page.evaluate("window.m2m.player.firstAudioAt - window.m2m.player.clickAt"))
        page.click("#stop")
        page.wait_for_timeout(1500)  # let the cancelled render's last chunk finish
    return out


def cpu_first_chunk(pieces: list, vocoders: list[str], stand_in_fast: bool) -> None:
    """In-process: CPU seconds (this thread) and wall time until the first audio chunk.

    The CPU time does not depend on what else the machine runs, so it tells what the wall
    time would be on two idle cores (one for the render, one for the browser and server).
    """
    import torch

    from mel2mel.midi import read_notes, time_to_frame
    from mel2mel.synthesizer import Synthesizer
    from mel2mel.vocoders.fast import FastVocoder
    from mel2mel.web.segments import RenderSpec, render_segments

    torch.set_num_threads(1)
    synth = Synthesizer.from_pretrained(vocoder="griffinlim")
    for vocoder in vocoders:
        if vocoder == "fast" and stand_in_fast:
            try:
                voc = synth.load_vocoder("fast")
            except Exception:
                voc = FastVocoder().eval()
        else:
            voc = synth.load_vocoder(vocoder)
        for name, data, start in pieces:
            seq = read_notes(data, warn=False)
            spec = RenderSpec(synth, seq, synth.timbre("0.3,-0.2"), vocoder, voc,
                              time_to_frame(start), seq.num_frames() + 125)  # fmt: skip
            cpu, wall = [], []
            for _ in range(3):
                c0, w0 = time.thread_time(), time.perf_counter()
                next(iter(render_segments(spec, lambda: None)))
                cpu.append(time.thread_time() - c0)
                wall.append(time.perf_counter() - w0)
            print(
                f"{vocoder:11s} {name:18s} from {start:5.0f} s: first chunk "
                f"{1000 * min(cpu):5.0f} ms CPU, {1000 * min(wall):5.0f} ms wall",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clicks", type=int, default=5)
    p.add_argument("--vocoders", default="fast,griffinlim")
    p.add_argument("--stand-in-fast", action="store_true")
    p.add_argument("--cpu", action="store_true", help="only the in-process CPU-time check")
    p.add_argument("--pieces", default="chorale,long,long_mid", help="which pieces")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    from mel2mel.examples import write_example

    example = Path("/tmp/mel2mel_bench_example.mid")
    write_example(example)
    long = random_piece(600.0, seed=1)
    every = {
        "chorale": ("chorale.mid", example.read_bytes(), 0.0),
        "long": ("long10min.mid", long, 0.0),
        "long_mid": ("long10min_mid.mid", long, 300.0),
    }
    pieces = [every[k] for k in args.pieces.split(",")]
    if args.cpu:
        cpu_first_chunk(pieces, args.vocoders.split(","), args.stand_in_fast)
        return
    with served_app(args.stand_in_fast) as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--autoplay-policy=no-user-gesture-required"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1200, "height": 1500})
        page.goto(f"{url}/")
        page.wait_for_function("window.m2m && window.m2m.ready === true", timeout=120_000)
        offered = page.eval_on_selector_all("#vocoder option", "os => os.map(o => o.value)")
        for vocoder in args.vocoders.split(","):
            if vocoder not in offered:
                print(f"{vocoder}: not available (offered: {offered})")
                continue
            for name, data, start in pieces:
                ms = measure(page, data, name, start, vocoder, args.clicks)
                print(
                    f"{vocoder:11s} {name:18s} from {start:5.0f} s: median "
                    f"{statistics.median(ms):6.0f} ms, max {max(ms):6.0f} ms  "
                    f"({', '.join(f'{m:.0f}' for m in ms)})",
                    flush=True,
                )
        browser.close()


if __name__ == "__main__":
    main()
