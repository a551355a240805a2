"""The blind listening test as a web app: one page for listeners, a results page, a JSON API.

Built by :func:`create_listening_app` over a gallery folder and an SQLite database
(:mod:`mel2mel.listening`); ``mel2mel listen serve`` runs it on the guarded uvicorn server of
:mod:`mel2mel.web.server`. The page (``static/listen.*``) walks a listener through consent and
a few optional questions, the training phase and the test trials, and thanks them.

API (every error is ``{"error": "one line"}``: 400 bad JSON or values, 403 an unknown token,
a wrong results key or a full test, 404 an unknown clip or page, 405, 413 a body over 4 KB):

* ``POST /api/listeners`` ``{"consent": true, "headphones": bool?, "expertise": str?}``:
  201 ``{"token": ...}``; the session is drawn now and stored.
* ``GET /api/listeners/{token}``: the session: opaque clip ids in order, with their phase and
  the training examples' labels (``best``/``worst``), and the answers so far. Configuration
  names, tracks and file names never reach the page.
* ``GET /api/listeners/{token}/clips/{clip}``: the clip's audio.
* ``PUT /api/listeners/{token}/ratings/{clip}`` ``{"score": 1..5}``: stores (or updates) the
  rating, committed before the answer.
* ``GET /results``, ``/api/results``, ``/api/results/ratings.csv``, ``/api/results/summary.csv``
  (``?key=`` when the app has a results key; ``?include_flagged=true``).
"""

from __future__ import annotations

import datetime
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.concurrency import run_in_threadpool

from mel2mel.listening.design import DEFAULT_TRAINING, DEFAULT_TRIALS, plan_session, seed_of
from mel2mel.listening.report import ratings_csv, summary_csv, summary_dict
from mel2mel.listening.site import Site, load_site
from mel2mel.listening.stats import Summary, flag_listeners, summarize
from mel2mel.listening.store import RatingStore, new_token
from mel2mel.web.bodies import read_json
from mel2mel.web.config import WebConfig
from mel2mel.web.errors import ApiError
from mel2mel.web.handlers import install_error_handlers
from mel2mel.web.listening_page import results_html

STATIC = Path(__file__).resolve().parent / "static"
PAGE_FILES = {
    "common.js": "text/javascript",
    "listen.js": "text/javascript",
    "listen.css": "text/css",
    "style.css": "text/css",
}
MAX_BODY_BYTES = 4096
MAX_TOKEN_CHARS = 64
AUDIO_TYPES = {
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
}
log = logging.getLogger("mel2mel.web.listening")


class StartBody(BaseModel):
    """``POST /api/listeners``: consent (must be true) and the optional questions."""

    model_config = ConfigDict(extra="forbid")
    consent: StrictBool
    headphones: StrictBool | None = None
    expertise: Literal["none", "musician", "audio"] | None = None


class RateBody(BaseModel):
    """``PUT /api/listeners/{token}/ratings/{clip}``: a score on the paper's 1..5 scale."""

    model_config = ConfigDict(extra="forbid")
    score: StrictInt = Field(ge=1, le=5)


async def _body(request: Request, model: type[BaseModel]) -> Any:
    """The request's JSON as ``model`` (413 over :data:`MAX_BODY_BYTES`, 400 otherwise)."""
    data = await read_json(request, MAX_BODY_BYTES)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, f"bad request: {where}: {first['msg']}") from None


def create_listening_app(
    site: Site | str | Path,
    db: RatingStore | str | Path,
    *,
    trials: int = DEFAULT_TRIALS,
    training: int = DEFAULT_TRAINING,
    min_listen_s: float = 8.0,
    results_key: str | None = None,
    session: str | None = None,
    max_listeners: int = 10_000,
    config: WebConfig | None = None,
) -> FastAPI:
    """The listening-test app (module docstring).

    Parameters
    ----------
    site:
        The gallery (a folder, or a :class:`~mel2mel.listening.site.Site`, e.g. with only
        some configurations: ``Site.select``).
    db:
        The database (a path, created if needed, or an open store, left open at shutdown).
    trials, training:
        Test trials and training clips per listener (:func:`plan_session`).
    min_listen_s:
        A rating can be sent once the clip has played to its end or this many seconds.
    results_key:
        When set, the results pages and CSVs need ``?key=`` equal to it (403 otherwise).
    session:
        A label stored with every listener and rating (default: today's date, UTC).
    max_listeners:
        New listeners are refused (403) once this many have started.
    config:
        The server's connection limits (:class:`~mel2mel.web.config.WebConfig`).
    """
    site = site if isinstance(site, Site) else load_site(site)
    own_store = not isinstance(db, RatingStore)
    store = RatingStore(db) if own_store else db
    labels = {**store.config_labels(), **{n: c.label for n, c in site.configs.items()}}
    store.set_meta("configs", json.dumps(labels))
    store.set_meta("title", site.title)
    session = session or datetime.datetime.now(datetime.UTC).date().isoformat()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if own_store:
            store.close()

    app = FastAPI(
        title="mel2mel listening test",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.config, app.state.store = config or WebConfig(), store
    app.state.close = lambda: None  # nothing to end early on SIGTERM (mel2mel.web.server)
    install_error_handlers(app, log)

    def listener_of(token: str) -> int:
        found = store.listener(token) if len(token) <= MAX_TOKEN_CHARS else None
        if found is None:
            raise ApiError(403, "unknown listener token: start the test again from the page")
        return found

    def check_key(key: str | None) -> None:
        if results_key is not None and not (
            key is not None and hmac.compare_digest(key.encode(), results_key.encode())
        ):
            raise ApiError(403, "the results need the right ?key=")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "listen.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        if name not in PAGE_FILES:
            raise ApiError(404, f"no such file: {name[:80]}")
        return FileResponse(
            STATIC / name, media_type=PAGE_FILES[name], headers={"Cache-Control": "no-cache"}
        )

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "title": site.title}

    @app.post("/api/listeners", status_code=201)
    async def start(request: Request) -> dict[str, Any]:
        body = await _body(request, StartBody)
        if not body.consent:
            raise ApiError(400, "the test starts only with your consent")
        if await run_in_threadpool(store.listener_count) >= max_listeners:
            raise ApiError(403, "this listening test is full; thank you for your interest")
        token = new_token()
        plan = plan_session(site, seed_of(token), trials=trials, training=training)
        agent = request.headers.get("user-agent", "")[:300] or None
        await run_in_threadpool(
            lambda: store.add_listener(
                token,
                plan,
                session=session,
                headphones=body.headphones,
                expertise=body.expertise,
                user_agent=agent,
            )
        )
        return {"token": token}

    @app.get("/api/listeners/{token}")
    async def get_session(token: str) -> dict[str, Any]:
        listener = await run_in_threadpool(listener_of, token)
        trials_ = await run_in_threadpool(store.session, listener)
        return {
            "title": site.title,
            "min_listen_s": min_listen_s,
            "trials": [
                {"id": t.clip_id, "phase": t.trial.phase, "example": t.trial.example}
                for t in trials_
            ],
            "answers": await run_in_threadpool(store.answers, listener),
        }

    @app.get("/api/listeners/{token}/clips/{clip_id}")
    async def clip_audio(token: str, clip_id: str) -> FileResponse:
        listener = await run_in_threadpool(listener_of, token)
        trial = await run_in_threadpool(store.trial, listener, clip_id)
        path = site.audio.get(trial.key) if trial is not None else None
        if path is None:
            raise ApiError(404, "no such clip in this session")
        kind = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "private"})

    @app.put("/api/listeners/{token}/ratings/{clip_id}")
    async def rate(token: str, clip_id: str, request: Request) -> dict[str, Any]:
        body = await _body(request, RateBody)
        listener = await run_in_threadpool(listener_of, token)
        agent = request.headers.get("user-agent", "")[:300] or None
        stored = await run_in_threadpool(
            lambda: store.rate(listener, clip_id, body.score, user_agent=agent)
        )
        if not stored:
            raise ApiError(404, "no such clip in this session")
        return {"ok": True, "answered": len(await run_in_threadpool(store.answers, listener))}

    def summary(include_flagged: bool) -> Summary:
        return summarize(store.ratings(), labels=labels, include_flagged=include_flagged)

    @app.get("/api/results")
    async def results_json(key: str | None = None, include_flagged: bool = False) -> Any:
        check_key(key)
        return summary_dict(await run_in_threadpool(summary, include_flagged))

    @app.get("/api/results/{name}.csv")
    async def results_csv(
        name: str, key: str | None = None, include_flagged: bool = False
    ) -> Response:
        check_key(key)
        if name == "summary":
            text = summary_csv(await run_in_threadpool(summary, include_flagged))
        elif name == "ratings":
            rows = await run_in_threadpool(store.ratings)
            text = ratings_csv(rows, flag_listeners(rows))
        else:
            raise ApiError(404, "the CSVs are ratings.csv and summary.csv")
        headers = {"Content-Disposition": f'attachment; filename="{name}.csv"'}
        return Response(text, media_type="text/csv", headers=headers)

    @app.get("/results", include_in_schema=False)
    async def results_page(key: str | None = None, include_flagged: bool = False) -> HTMLResponse:
        check_key(key)
        data = summary_dict(await run_in_threadpool(summary, include_flagged))
        return HTMLResponse(
            results_html(site.title, data, key), headers={"Cache-Control": "no-store"}
        )

    return app
