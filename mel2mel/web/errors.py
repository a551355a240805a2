"""The one exception the web API turns into ``{"error": "..."}`` with a status code."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line ``message``.

    ``headers`` are added to the response (``Retry-After`` on a 503, for example).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def __reduce__(self) -> tuple[type[ApiError], tuple[int, str, dict[str, str]]]:
        # raised in the parse pool's processes: it must cross back whole
        return type(self), (self.status, self.message, self.headers)
