"""What ``mel2mel serve`` adds for the in-page synthesis (docs/WEB.md, "In the page").

* ``GET /onnx/{name}``: the ONNX graphs of the served models and their ``manifest.json``
  (:func:`mel2mel.models.onnx_export.write_onnx`), built from the loaded models once, in a
  background thread when the app starts, into a cache folder keyed by the models' fingerprints
  (``$MEL2MEL_CACHE`` or ``$XDG_CACHE_HOME/mel2mel`` or ``~/.cache/mel2mel``, then
  ``onnx/<key>/``), and served from there; folders of other models unused for
  :data:`STALE_DAYS` days are removed then (:func:`prune_cache`). 503 with ``Retry-After``
  while they are built; 404 when the served models cannot run in the page (no fast vocoder,
  no ``onnx`` package).
* Cross-origin isolation (``Cross-Origin-Opener-Policy: same-origin``,
  ``Cross-Origin-Embedder-Policy: require-corp`` on every response), which lets
  onnxruntime-web use threads (SharedArrayBuffer). Everything the page loads is same-origin.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.fileio import cache_root
from mel2mel.models.export import fitted_tables, model_fingerprint
from mel2mel.version import __version__

log = logging.getLogger("mel2mel.web")
# plotly.js's 3-D partial bundle, vendored from npm (static/vendor/plotly/README.md)
PLOTLY_3D = Path(__file__).resolve().parent / "static" / "vendor" / "plotly" / "plotly-gl3d.min.js"
STALE_DAYS = 30  # a cached model folder unused this long is removed by the next server
ISOLATION_HEADERS = [
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
]


class CrossOriginIsolation:
    """ASGI middleware adding the COOP/COEP headers to every HTTP response (pure ASGI, so
    streamed responses stay streamed)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *ISOLATION_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


def prune_cache(root: Path, keep: Path, max_age_s: float = STALE_DAYS * 86400.0) -> list[Path]:
    """Remove the model folders of ``root`` other than ``keep`` whose ``manifest.json`` (touched
    each time a server uses the folder) is older than ``max_age_s``; returns what went.
    Folders without a manifest, and anything else in ``root``, are left alone."""
    removed = []
    if not root.is_dir():
        return removed
    now = time.time()
    for folder in root.iterdir():
        manifest = folder / "manifest.json"
        if folder == keep or not folder.is_dir() or not manifest.is_file():
            continue
        if now - manifest.stat().st_mtime > max_age_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class InpageModels:
    """The served models as ONNX files, built once in the background.

    Parameters
    ----------
    synth:
        The served :class:`~mel2mel.Synthesizer` (its acoustic model and texture post-net).
    vocoder:
        The served fast vocoder, or ``None`` (then the page synthesizes on the server).
    space:
        The 100-instrument space (:class:`mel2mel.web.maps.Space`); its model is added when
        available.
    root:
        Cache folder (default :func:`mel2mel.fileio.cache_root` / ``onnx``).
    """

    def __init__(self, synth: Any, vocoder: Any, space: Any, root: Path | None = None) -> None:
        self.synth, self.vocoder, self.space = synth, vocoder, space
        self.root = root or cache_root() / "onnx"
        self.folder: Path | None = None
        self.reason: str | None = self._unavailable()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._started = False

    def _unavailable(self) -> str | None:
        from mel2mel.vocoders.fast import FastVocoder

        if not isinstance(self.vocoder, FastVocoder) or not self.vocoder.config.integrate_phase:
            return "the server has no fast vocoder"
        if self.vocoder.config.n_fft != C.N_FFT:  # the page's DSP is written for the mel's FFT
            return f"the fast vocoder's n_fft is not {C.N_FFT}"
        try:
            import onnx  # noqa: F401
        except ImportError:
            return "the server lacks the onnx package (pip install 'mel2mel[web]')"
        return None

    def status(self) -> dict[str, Any]:
        """``{"available", "ready", "reason"}`` for ``/api/info``."""
        return {"available": self.reason is None, "ready": self._done.is_set() and self.folder
                is not None, "reason": self.reason}  # fmt: skip

    def start(self) -> None:
        """Build (or find in the cache) the files in a background thread, once."""
        with self._lock:
            if self._started or self.reason is not None:
                return
            self._started = True
        threading.Thread(target=self._build, name="mel2mel-onnx", daemon=True).start()

    def _key(self, space_model: Any) -> str:
        h = hashlib.sha256(__version__.encode())
        parts = [self.synth.acoustic, self.synth.texture, self.vocoder, space_model]
        for part in parts:
            h.update(b"-" if part is None else model_fingerprint(part).encode())
        for model in (self.synth.acoustic, space_model):  # tables fitted beside the weights
            for table in fitted_tables(model):
                h.update(json.dumps(table, sort_keys=True).encode())
        if self.synth.texture is not None:  # its strengths and ceiling, baked into its graph
            h.update(self.synth.texture.render_key().encode())
        return h.hexdigest()[:16]

    def _build(self) -> None:
        from mel2mel.models.onnx_export import write_onnx

        try:
            space_model, embeddings = None, None
            if self.space is not None and self.space.available:
                space_model = self.space.synth().acoustic
                embeddings = [self.space.embedding(k).tolist() for k in
                              range(len(self.space.instruments))]  # fmt: skip
            folder = self.root / self._key(space_model)
            if not (folder / "manifest.json").is_file():
                # traced from copies: the served models keep rendering in other threads
                parts = (self.synth.acoustic, self.synth.texture, self.vocoder, space_model)
                write_onnx(folder, *(copy.deepcopy(p) for p in parts), embeddings)
            (folder / "manifest.json").touch()  # in use: not stale for prune_cache
            for old in prune_cache(self.root, folder):
                log.info("removed the in-page models of %s, unused for %d days", old, STALE_DAYS)
            self.folder = folder
        except (UserError, OSError, ValueError, RuntimeError) as err:
            log.error("the in-page models could not be built: %s", err)
            self.reason = "the in-page models could not be built (the server's log has why)"
        finally:
            self._done.set()

    def path(self, name: str) -> Path | None:
        """The file ``name`` once built (``None`` while building); raises ``LookupError``
        for a name that is not one of the files (or when they cannot be built)."""
        if self.reason is not None:
            raise LookupError(self.reason)
        self.start()
        if not self._done.is_set():
            return None
        if self.folder is None:
            raise LookupError(self.reason or "no in-page models")
        path = self.folder / name
        if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
            raise LookupError(f"no file {name[:60]!r} among the in-page models")
        return path
