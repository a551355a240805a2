"""The mel2mel web app: a page with the timbre map, the 100-instrument space and streaming
renders of uploaded MIDI files, over a small JSON/audio API (``docs/WEB.md``).

Needs the ``[web]`` extra (FastAPI, uvicorn, python-multipart, plotly). Start it with
``mel2mel serve``, or build it in code with :func:`mel2mel.web.app.create_app`.
"""

from __future__ import annotations
