"""The FastAPI app: one page, static files, and a small JSON/audio API (see ``docs/WEB.md``).

Every error is ``{"error": "one line"}`` with a status code: 400 bad parameters, 404 unknown
ids, 409 audio not ready, 411/413 uploads without a length or too big, 422 unusable MIDI, 503
busy (with ``Retry-After``), 504 a preview that timed out, and 500 (``"internal error"``, the
details only in the server's log). Framework errors (validation, multipart, unknown routes)
get the same shape. Messages never hold server paths or the timbre library's names. Work that
takes CPU time runs off the event loop, in bounded pools that refuse (503) rather than queue
without end: large MIDI files are read in worker processes, small ones, previews and renders
in threads of their own (:mod:`mel2mel.web.pools`, :mod:`mel2mel.web.jobs`), so no kind of
work starves another. A client that leaves in the middle of its request is logged in one line.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, ValidationError

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.errors import UserError
from mel2mel.midi import time_to_frame
from mel2mel.synthesizer import TAIL_SECONDS, Synthesizer
from mel2mel.timbre.samples import SoundFontSamples
from mel2mel.vocoders.base import Vocoder
from mel2mel.web.bodies import read_json, read_upload, wav_bytes
from mel2mel.web.config import MB, WebConfig
from mel2mel.web.errors import ApiError
from mel2mel.web.handlers import install_error_handlers
from mel2mel.web.inpage import PLOTLY_3D, CrossOriginIsolation, InpageModels
from mel2mel.web.jobs import Job, JobManager
from mel2mel.web.maps import MapService, Space, plotly_js, soundfont_wav
from mel2mel.web.pools import PARSE_SECONDS_PER_MB, Lane, process_pool, thread_pool
from mel2mel.web.segments import RenderSpec
from mel2mel.web.uploads import Upload, UploadStore, parse_piece

STATIC = Path(__file__).resolve().parent / "static"
VOCODER_KINDS = ("fast", "wavenet", "griffinlim")
STREAM_POLL_S = 5.0
log = logging.getLogger("mel2mel.web")


class RenderBody(BaseModel):
    """``POST /api/render``: one of ``timbre`` / ``x`` + ``y`` / ``space_index``."""

    model_config = ConfigDict(extra="forbid")
    upload_id: str | None = None
    timbre: str | None = None
    x: float | None = None
    y: float | None = None
    space_index: int | None = None
    vocoder: str | None = None
    start: float = 0.0
    end: float | None = None
    label: str | None = None


def available_vocoders(synth: Synthesizer) -> dict[str, Vocoder]:
    """The vocoders that load, by kind (fast and WaveNet need their weights)."""
    found = {}
    for kind in VOCODER_KINDS:
        try:
            found[kind] = synth.load_vocoder(kind)
        except (UserError, OSError, ValueError):
            continue
    return found


def create_app(
    synth: Synthesizer | None = None,
    *,
    config: WebConfig | None = None,
    space: Space | None = None,
    map_resolution: int = 41,
    vocoders: Mapping[str, Vocoder] | None = None,
    timbre_library: Path | None = None,
    soundfont_cache: Path | None = None,
) -> FastAPI:
    """Build the app around a synthesizer (default: the shipped models).

    Parameters
    ----------
    synth:
        The 2-D model the map and renders use.
    config:
        Limits (:class:`WebConfig`).
    space:
        The 100-instrument space (default: the shipped files, if any).
    map_resolution:
        Cells per side of the timbre map.
    vocoders:
        The vocoders offered, by kind (default: those of ``VOCODER_KINDS`` that load); the
        default is fast, else Griffin-Lim, else the first.
    timbre_library:
        Folder of the timbre library whose learned timbres the map shows (default: the
        synthesizer's library, whose timbres renders resolve by name).
    soundfont_cache:
        Folder of the cached SoundFont renders behind the space's dots (default:
        :func:`mel2mel.timbre.samples.default_cache_dir`).
    """
    cfg = config or WebConfig()
    if cfg.torch_threads is not None:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    synth = synth or Synthesizer.from_pretrained(vocoder="griffinlim")
    space = space or Space()
    samples = SoundFontSamples(soundfont_cache)
    uploads = UploadStore(cfg)
    jobs = JobManager(cfg)
    maps = MapService(synth, map_resolution, timbre_library)
    vocoders = dict(vocoders) if vocoders else available_vocoders(synth)
    default_vocoder = next(
        (k for k in ("fast", "griffinlim") if k in vocoders), next(iter(vocoders))
    )
    inpage = InpageModels(synth, vocoders.get("fast"), space)  # ONNX files for the page
    parse = Lane(process_pool(cfg.parse_workers), cfg.parse_workers,  # cost: MB of MIDI
                 cfg.parse_workers + cfg.max_queued_parses, "reading a file",
                 PARSE_SECONDS_PER_MB)  # fmt: skip
    quick = Lane(thread_pool(1, "mel2mel-parse"), 1, 1 + cfg.max_queued_parses, "reading a file",
                 PARSE_SECONDS_PER_MB)  # fmt: skip
    light = Lane(thread_pool(cfg.preview_workers, "mel2mel-light"), cfg.preview_workers,
                 cfg.preview_workers + cfg.max_queued_previews, "a preview", 0.5)  # fmt: skip
    lanes = {"parse": parse, "quick_parse": quick, "light": light}
    state: dict[str, Future[dict[str, Any]]] = {}
    counters: Counter[str] = Counter()  # receiving uploads, clients gone mid-request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        map_pool = ThreadPoolExecutor(1, "mel2mel-map")
        state["map"] = map_pool.submit(maps.compute)
        inpage.start()
        if space.available:  # load its model now rather than on the first click
            map_pool.submit(space.synth)
        yield
        jobs.shutdown()
        for lane in lanes.values():
            lane.shutdown()
        map_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="mel2mel", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.jobs, app.state.uploads, app.state.config = jobs, uploads, cfg
    app.state.lanes, app.state.counters = lanes, counters
    app.state.close = jobs.close  # on SIGTERM, before connections drain (mel2mel.web.server)

    def count_disconnect() -> None:
        counters["client_disconnects"] += 1

    install_error_handlers(app, log, count_disconnect)
    app.add_middleware(CrossOriginIsolation)  # threads for onnxruntime-web (mel2mel.web.inpage)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    async def plotly() -> Response:
        # plotly.js's 3-D bundle (1.75 MB; the page draws only scatter3d), else the wheel's (4.8)
        path = PLOTLY_3D if PLOTLY_3D.is_file() else plotly_js()
        if path is None:
            raise ApiError(404, "plotly is not installed: pip install 'mel2mel[web]'")
        return FileResponse(path, media_type="text/javascript")

    @app.api_route("/onnx/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def onnx_file(name: str) -> FileResponse:
        try:
            path = inpage.path(name)
        except LookupError as err:
            raise ApiError(404, str(err)) from None
        if path is None:
            raise ApiError(503, "the in-page models are being built", {"Retry-After": "1"})
        media = "application/json" if name.endswith(".json") else "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return {
            "instruments": [
                {"name": i.name, "program": i.program, "embedding": i.embedding}
                for i in synth.instruments()
            ],
            "embedding_dim": synth.timbres.dim,
            "vocoders": list(vocoders),
            "default_vocoder": default_vocoder,
            "sample_rate": C.SAMPLE_RATE,
            "limits": cfg.page_limits(),
            "space": {"available": space.available, "reason": space.reason},
            "inpage": inpage.status(),
        }

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {
            "ok": True,
            "active_renders": jobs.active(),
            "uploads": len(uploads),
            "held_notes": uploads.notes,
            "parsing": parse.pending + quick.pending,
        }

    @app.get("/api/map")
    async def timbre_map() -> dict[str, Any]:
        future = state.get("map")
        if future is None or not future.done():
            raise ApiError(503, "the timbre map is still being computed", {"Retry-After": "2"})
        if future.exception() is not None:
            log.error("the timbre map failed", exc_info=future.exception())
            raise ApiError(500, "the timbre map could not be computed")
        return future.result()

    def _coordinates(x: Any, y: Any) -> tuple[float, float]:
        """Finite ``(x, y)`` within the timbre space's box (instruments plus a margin)."""
        try:
            px = validate.number(x, "x")
            py = validate.number(y, "y")
            synth.timbres.check_vector([px, py], "the point")
        except UserError as err:
            raise ApiError(400, f"bad coordinates: {err}") from None
        return px, py

    @app.get("/api/preview")
    async def preview(x: str, y: str) -> Response:
        px, py = _coordinates(x, y)
        data, frames = await light.run(maps.preview, px, py, timeout=cfg.preview_timeout_s)
        headers = {"X-Mel-Bins": str(C.N_MELS), "X-Mel-Frames": str(frames)}
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.get("/api/space")
    async def space_info() -> dict[str, Any]:
        return space.public()

    @app.get("/api/space/{index}/soundfont.wav")
    async def space_soundfont(
        index: int, upload_id: str | None = None, start: float = 0.0
    ) -> Response:
        """The SoundFont behind a dot (FluidSynth) playing what the model's clip plays."""
        if not space.available:
            raise ApiError(404, space.reason or "no 100-instrument space")
        last = len(space.instruments) - 1
        if not 0 <= index <= last:
            raise ApiError(404, f"no instrument {index}: the space has 0..{last}")
        if not SoundFontSamples.available():
            raise ApiError(503, "SoundFont samples need FluidSynth on the server "
                           "(apt install fluidsynth)")  # fmt: skip
        try:
            start = validate.seconds(start, "start")
        except UserError as err:
            raise ApiError(400, str(err)) from None
        item = uploads.get(upload_id) if upload_id is not None else None
        seq = item.piece.unpack() if item is not None else maps.reference
        if start >= max(seq.duration, 0.0) and start > 0:
            raise ApiError(400, f"start {start:g} s is past the end ({seq.duration:.2f} s)")
        inst = space.soundfont_instrument(index)
        data = await light.run(soundfont_wav, samples, inst, seq, start, cfg.space_clip_seconds,
                               timeout=cfg.render_timeout_s)  # fmt: skip
        return Response(data, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    @app.post("/api/uploads", status_code=201)
    async def upload(request: Request, name: str = "upload.mid") -> Response:
        if counters["receiving"] >= cfg.max_receiving_uploads:
            raise ApiError(503, "the server is busy (too many uploads at once); retry shortly",
                           {"Retry-After": "2"})  # fmt: skip
        counters["receiving"] += 1
        try:
            data, name = await read_upload(request, cfg, name)
        finally:
            counters["receiving"] -= 1
        lane = quick if len(data) <= cfg.quick_parse_bytes else parse
        piece, notes = await lane.run(
            parse_piece, data, cfg, timeout=cfg.parse_timeout_s, cost=len(data) / MB
        )
        del data
        summary = uploads.add(name, piece).summary(notes, cfg.max_notes_shown)
        return Response(summary, status_code=201, media_type="application/json")

    @app.get("/api/uploads/{upload_id}")
    async def get_upload(upload_id: str) -> Response:
        item = uploads.get(upload_id)
        notes = await light.run(
            item.piece.notes_json, cfg.max_notes_shown, timeout=cfg.preview_timeout_s
        )
        return Response(item.summary(notes, cfg.max_notes_shown), media_type="application/json")

    @app.post("/api/render", status_code=202)
    async def render(request: Request) -> dict[str, Any]:
        try:
            body = RenderBody.model_validate(await read_json(request, cfg.max_json_bytes))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ApiError(400, f"bad request: {where}: {first['msg']}") from None
        item = uploads.get(body.upload_id) if body.upload_id is not None else None
        spec, label = _render_spec(body, item)
        if item is None:
            return jobs.submit(spec, label).info()
        uploads.pin(item)  # kept, and counted, until the job ends
        return jobs.submit(spec, label, lambda: uploads.unpin(item)).info()

    def _render_spec(body: RenderBody, item: Upload | None) -> tuple[RenderSpec, str]:
        vocoder = body.vocoder or default_vocoder
        if vocoder not in vocoders:
            raise ApiError(
                400, f"unknown or unavailable vocoder {vocoder[:40]!r}; use {', '.join(vocoders)}"
            )
        seq = item.piece if item is not None else None
        if body.space_index is not None:
            if not space.available:
                raise ApiError(404, space.reason or "no 100-instrument space")
            if not 0 <= body.space_index < len(space.instruments):
                raise ApiError(
                    400, f"space_index must be 0..{len(space.instruments) - 1}, "
                    f"got {body.space_index}",
                )  # fmt: skip
            try:
                target = space.synth()
            except (UserError, OSError, ValueError) as err:
                log.error("the 100-instrument model could not be loaded: %s", err)
                raise ApiError(500, "the 100-instrument model could not be loaded") from None
            timbre = target.timbre(space.embedding(body.space_index))
            label = space.instruments[body.space_index]["name"]
            seq = seq or maps.reference
            start, end = body.start, body.start + cfg.space_clip_seconds
        else:
            seq = seq or maps.reference  # nothing uploaded yet: the reference passage
            target = synth
            if body.x is not None or body.y is not None:
                if body.x is None or body.y is None or body.timbre is not None:
                    raise ApiError(400, "give either timbre or both x and y")
                spec_text = ",".join(f"{v:.6g}" for v in _coordinates(body.x, body.y))
            else:
                spec_text = body.timbre or synth.instruments()[0].name
            try:
                timbre = synth.timbre(spec_text)
            except UserError as err:  # public_message: no library names or server paths
                raise ApiError(400, err.public_message()[:400]) from None
            label = body.label or timbre.label
            start, end = body.start, body.end
        return _frames(target, seq, timbre, vocoder, start, end), str(label)[:120]

    def _frames(target: Synthesizer, seq: Any, timbre: Any, vocoder: str, start: float,
                end: float | None) -> RenderSpec:  # fmt: skip
        total = seq.num_frames() + round(TAIL_SECONDS * C.FRAME_RATE)
        piece = total / C.FRAME_RATE
        try:
            start = validate.seconds(start, "start")
            end = None if end is None else validate.seconds(end, "end")
        except UserError as err:
            raise ApiError(400, str(err)) from None
        first = time_to_frame(start)
        if first >= total - 1:
            raise ApiError(400, f"start {start:g} s is past the end ({piece:.2f} s)")
        if end is not None and end <= start:
            raise ApiError(400, f"end must be after start ({start:g} s), got {end:g}")
        stop = total if end is None else min(total, time_to_frame(end))
        seconds = (stop - first) / C.FRAME_RATE
        if seconds > cfg.max_render_seconds:
            raise ApiError(
                400, f"the range is {seconds:.0f} s; renders are limited to "
                f"{cfg.max_render_seconds:.0f} s: choose a shorter range",
            )  # fmt: skip
        voc = vocoders[vocoder]
        return RenderSpec(target, seq, timbre, vocoder, voc, first, max(stop, first + 1))

    @app.get("/api/jobs/{job_id}")
    async def job_info(job_id: str) -> dict[str, Any]:
        return jobs.get(job_id).info()

    @app.delete("/api/jobs/{job_id}")
    async def job_cancel(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        jobs.cancel(job)
        return job.info()

    @app.get("/api/jobs/{job_id}/audio.pcm")
    async def job_stream(job_id: str) -> StreamingResponse:
        job = jobs.get(job_id)
        headers = {"X-Sample-Rate": str(C.SAMPLE_RATE), "Cache-Control": "no-store"}
        return StreamingResponse(_pcm(job), media_type="application/octet-stream", headers=headers)

    async def _pcm(job: Job) -> AsyncIterator[bytes]:
        sent = 0
        job.readers += 1
        try:
            while True:
                if sent < len(job.chunks):
                    sent += 1
                    yield job.chunks[sent - 1]
                elif job.done:
                    return
                else:
                    await job.wait(sent, STREAM_POLL_S)
        finally:
            job.readers -= 1
            if job.readers == 0 and not job.done:  # its last reader went away: free the worker
                jobs.cancel(job)

    @app.get("/api/jobs/{job_id}/audio.wav")
    async def job_wav(job_id: str) -> Response:
        job = jobs.get(job_id)
        if job.state != "done":
            why = job.error or "it is still rendering"
            raise ApiError(409, f"the audio is not ready: {why}")
        data = await light.run(wav_bytes, job.chunks, timeout=cfg.preview_timeout_s)
        name = "".join(c if c.isalnum() else "_" for c in job.label)[:40] or "render"
        headers = {"Content-Disposition": validate.content_disposition(f"mel2mel_{name}.wav")}
        return Response(data, media_type="audio/wav", headers=headers)

    return app
