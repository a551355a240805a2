"""The in-page path's speed in headless chromium, against the Python path in the same run.

Exports the static site (``mel2mel export site``, 5 x 5 map) to a temporary folder unless
``--site`` names one, serves it with ``http.server`` (with the COOP/COEP headers unless
``--no-isolation``; ``--page-threads 2`` gives onnxruntime-web two threads, which needs
them), and measures in the page (one engine, on the page's main thread; the page itself runs
two, in workers):

* the mel preview of a new map point (the reference passage, 499 frames), after 3 warm-up
  points: median and 90th percentile over ``--points`` points;
* a 30 s piece (the first 30 s of the example chorale played twice) rendered in the page,
  MIDI -> audio with the fast vocoder: time to the first audio block and to the end, median of
  ``--repeats``; the real-time factor is audio seconds / render seconds.

Baseline, measured here too: the same work in Python on this machine (``preview_mel`` of the
same points, ``Synthesizer.render`` of the same 30 s, ``--threads`` torch threads).

    python benchmarks/bench_inpage.py [--points 20] [--repeats 3] [--threads 1]
        [--site DIR] [--no-isolation] [--page-threads 1]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
PIECE_SECONDS = 30.0


class Handler(http.server.SimpleHTTPRequestHandler):
    isolate = True

    def end_headers(self) -> None:
        if self.isolate:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, *args: object) -> None:
        pass


def piece() -> bytes:
    from mel2mel.examples import chorale

    buf = io.BytesIO()
    chorale(2).save(file=buf)
    return buf.getvalue()


PAGE = """async ([points, repeats, seconds, threads]) => {
  const E = await import('/static/inpage/engine.js'), M = await import('/static/inpage/midi.js');
  const eng = await E.Engine.load(new URL('/models/', location.href).href, {threads});
  const ref = E.referencePassage(), T = ref.numFrames() + E.REFERENCE_TAIL_FRAMES;
  const roll = new M.NoteRoll(ref.notes, T).window(0, T), preview = [];
  for (let i = 0; i < points.length; i++) {
    const t0 = performance.now();
    await eng.acoustic(roll, T, points[i]);
    if (i >= 3) preview.push(performance.now() - t0);
  }
  const seq = M.readNotes(await (await fetch('/piece.mid')).arrayBuffer()), renders = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    let first = 0, samples = 0;
    for await (const b of eng.render(seq, {embedding: [0.2, -0.4], end: seconds})) {
      if (!first) first = performance.now() - t0;
      samples += b.audio.length;
    }
    renders.push({first, total: performance.now() - t0, seconds: samples / 16000});
  }
  const threadsUsed = eng.ort.env.wasm.numThreads;
  return {preview, renders, isolated: self.crossOriginIsolated, threads: threadsUsed};
}"""


def in_page(
    site: Path, points: list[list[float]], repeats: int, isolate: bool, threads: int | None
) -> dict:
    from playwright.sync_api import sync_playwright

    (site / "piece.mid").write_bytes(piece())
    (site / "blank.html").write_text("<!doctype html><title>bench</title>")
    handler = type("H", (Handler,), {"isolate": isolate})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(site))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page()
            page.set_default_timeout(600_000)
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/blank.html")
            out = page.evaluate(PAGE, [points, repeats, PIECE_SECONDS, threads])
            browser.close()
    finally:
        server.shutdown()
    return out


def in_python(points: list[list[float]], repeats: int, threads: int) -> dict:
    import torch

    from mel2mel.synthesizer import Synthesizer
    from mel2mel.timbre.map import preview_mel

    torch.set_num_threads(threads)
    synth = Synthesizer.from_pretrained(vocoder="fast")
    preview = []
    for i, pt in enumerate(points):
        t0 = time.perf_counter()
        preview_mel(synth, pt)
        if i >= 3:
            preview.append(1000 * (time.perf_counter() - t0))
    data, renders = piece(), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        first, samples = 0.0, 0
        for chunk in synth.stream(data, timbre=[0.2, -0.4], duration=PIECE_SECONDS):
            first = first or 1000 * (time.perf_counter() - t0)
            samples += len(chunk)
        renders.append({"first": first, "total": 1000 * (time.perf_counter() - t0),
                        "seconds": samples / 16000})  # fmt: skip
    return {"preview": preview, "renders": renders}


def summary(name: str, r: dict) -> dict[str, float]:
    pv = np.asarray(r["preview"])
    total = statistics.median(x["total"] for x in r["renders"]) / 1000
    first = statistics.median(x["first"] for x in r["renders"])
    seconds = r["renders"][0]["seconds"]
    s = {"preview_ms": float(np.median(pv)), "preview_p90_ms": float(np.percentile(pv, 90)),
         "first_ms": first, "render_s": total, "rtf": seconds / total}  # fmt: skip
    print(f"{name:>10}: preview {s['preview_ms']:.0f} ms (p90 {s['preview_p90_ms']:.0f}), "
          f"{seconds:.0f} s piece: first audio block {first:.0f} ms, render {total:.2f} s "
          f"({s['rtf']:.1f}x real time)")  # fmt: skip
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", type=Path, help="an exported site (default: export one now)")
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the baseline")
    ap.add_argument("--no-isolation", action="store_true", help="serve without COOP/COEP")
    ap.add_argument("--page-threads", type=int, default=None,
                    help="onnxruntime-web threads (default: the page's, 1)")  # fmt: skip
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    points = [[float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.5))]
              for _ in range(args.points + 3)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        site = args.site
        if site is None:
            from mel2mel.web.site import export_site

            site = Path(tmp) / "site"
            export_site(site, map_resolution=5)
        page = in_page(site, points, args.repeats, not args.no_isolation, args.page_threads)
    python = in_python(points, args.repeats, args.threads)
    print(f"chromium: cross-origin isolated {page['isolated']}, {page['threads']} ORT thread(s); "
          f"Python: {args.threads} torch thread(s)")  # fmt: skip
    a, b = summary("page", page), summary("python", python)
    ratio = {k: a[k] / b[k] for k in ("preview_ms", "first_ms", "render_s")}
    print(f"ratios page / python: preview {ratio['preview_ms']:.2f}, first audio "
          f"{ratio['first_ms']:.2f}, render {ratio['render_s']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
