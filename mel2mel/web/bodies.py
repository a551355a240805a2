"""Reading request bodies with their limits, and writing the WAV of a render.

Bodies are read as they arrive and refused (413) as soon as they pass their limit, declared
or not, so that nothing larger is ever held or parsed: a render request's JSON
(``max_json_bytes``, nested at most ``mel2mel.validate.MAX_JSON_DEPTH`` levels) and an upload
(``max_upload_bytes``, as a raw body or a multipart form).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request

from mel2mel import constants as C
from mel2mel import validate
from mel2mel.errors import UserError
from mel2mel.web.config import WebConfig
from mel2mel.web.errors import ApiError


def wav_bytes(chunks: list[bytes]) -> bytes:
    """A 16-bit mono WAV file of the PCM chunks."""
    import soundfile as sf

    pcm = np.frombuffer(b"".join(chunks), dtype="<i2")
    buf = io.BytesIO()
    sf.write(buf, pcm, C.SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def declared_length(request: Request) -> int | None:
    """The request's Content-Length, or ``None`` when absent or not ASCII digits."""
    text = request.headers.get("content-length", "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


async def read_body(request: Request, limit: int, too_big: str) -> bytes:
    """The raw body, refused with 413 ``too_big`` as soon as it is declared or received
    over ``limit`` bytes (nothing past the limit is kept)."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise ApiError(413, too_big)
    buf = bytearray()
    async for piece in request.stream():
        buf += piece
        if len(buf) > limit:
            raise ApiError(413, too_big)
    return bytes(buf)


async def read_json(request: Request, limit: int) -> Any:
    """The JSON of a request body, refused (413/400) when over ``limit`` bytes (declared or
    received) or nested deeper than ``mel2mel.validate.MAX_JSON_DEPTH``, before it is
    parsed."""
    body = await read_body(request, limit, f"the request body is over {limit} bytes")
    try:
        validate.json_depth(body)
        data = json.loads(body)
    except UserError as err:
        raise ApiError(400, str(err)) from None
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body must be a JSON object") from None
    return data


async def read_upload(request: Request, cfg: WebConfig, name: str) -> tuple[bytes, str]:
    """The file of an upload: a raw body (``?name=``) or a multipart form field ``file``."""
    declared = declared_length(request)
    limit = cfg.max_upload_bytes
    too_big = f"file too big: the limit is {limit} bytes"
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        if declared is None:
            raise ApiError(411, "a multipart upload needs a Content-Length")
        if declared > limit + 64 * 1024:
            raise ApiError(413, too_big)
        form = await request.form(max_files=1, max_fields=4)
        item = form.get("file")
        if item is None or isinstance(item, str):
            raise ApiError(400, "the form needs a file field named 'file'")
        data = await item.read(limit + 1)
        name = item.filename or name
    else:
        data = await read_body(request, limit, too_big)
    if len(data) > limit:
        raise ApiError(413, too_big)
    return data, Path(name).name or "upload.mid"
