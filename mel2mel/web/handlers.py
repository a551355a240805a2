"""Error handlers that give every refusal of an app the shape ``{"error": "one line"}``.

:func:`install_error_handlers` turns :class:`~mel2mel.web.errors.ApiError`, FastAPI's
parameter validation (400), unknown routes (404) and methods (405), a client that left in the
middle of its request, and any other exception (500, ``"internal error"``, the traceback only
in the log) into that shape. Both apps (the main one and the listening test) use it
(``docs/WEB.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mel2mel.errors import one_line
from mel2mel.web.errors import ApiError


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install_error_handlers(
    app: FastAPI, log: logging.Logger, on_disconnect: Callable[[], None] | None = None
) -> None:
    """Answer every error of ``app`` as ``{"error": "one line"}`` (module docstring); log
    disconnects (info) and internal errors (error, with the traceback) to ``log``, and call
    ``on_disconnect`` for each client that left mid-request."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_params(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"]) or "request"
        return error_response(400, f"bad request: {where}: {first['msg']}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        path = request.url.path[:80]
        if err.status_code == 404:
            message = f"no such page: {path}"
        elif err.status_code == 405:
            message = f"{request.method} is not allowed on {path}"
        else:  # multipart parsing and the like: starlette's detail is one line
            message = one_line(Exception(err.detail))[:200]
        return error_response(err.status_code, message, dict(err.headers or {}))

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, err: ClientDisconnect) -> Response:
        if on_disconnect is not None:
            on_disconnect()
        log.info("client left during %s %s", request.method, request.url.path[:80])
        return error_response(400, "the client disconnected")  # nobody reads it

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=err)
        return error_response(500, "internal error (the server's log has the details)")
