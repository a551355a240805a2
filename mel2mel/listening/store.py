"""The listening test's database: listeners, their sessions and one row per rating (SQLite).

Tables (``docs/LISTENING.md`` lists every column):

* ``listeners``: one row per listener, created when they start; the token that authorises
  their writes is stored only as its SHA-256 (a copy of the database lets nobody write as
  them), with the optional answers of the start page (headphones, expertise);
* ``trials``: each listener's session as drawn (:mod:`mel2mel.listening.design`), with the
  opaque random id the page knows each clip by;
* ``ratings``: one row per (listener, phase, clip), ``UNIQUE``: a re-submit updates that row
  only, and every write names its listener through the token, so one listener can never write
  another's rows.

Durability: WAL journal, ``synchronous=FULL``, and every write is one statement in its own
transaction, committed before :meth:`RatingStore.rate` returns, so a killed server loses at
most the answer it was writing. One connection, shared by the server's threads under a lock.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mel2mel.errors import UserError
from mel2mel.listening.design import Trial
from mel2mel.listening.site import ClipKey

FORMAT = "mel2mel-listening"
VERSION = "1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS listeners (
    id INTEGER PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    session TEXT NOT NULL,
    created REAL NOT NULL,
    headphones INTEGER CHECK (headphones IN (0, 1)),
    expertise TEXT,
    user_agent TEXT
);
CREATE TABLE IF NOT EXISTS trials (
    listener_id INTEGER NOT NULL REFERENCES listeners(id),
    position INTEGER NOT NULL,
    clip_id TEXT NOT NULL UNIQUE,
    phase TEXT NOT NULL CHECK (phase IN ('training', 'test')),
    track TEXT NOT NULL, instrument TEXT NOT NULL, config TEXT NOT NULL,
    role TEXT NOT NULL, example TEXT,
    PRIMARY KEY (listener_id, position)
);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY,
    listener_id INTEGER NOT NULL REFERENCES listeners(id),
    session TEXT NOT NULL,
    phase TEXT NOT NULL CHECK (phase IN ('training', 'test')),
    track TEXT NOT NULL, instrument TEXT NOT NULL, config TEXT NOT NULL,
    role TEXT NOT NULL,
    attention INTEGER NOT NULL CHECK (attention IN (0, 1)),
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    position INTEGER NOT NULL,
    time REAL NOT NULL,
    user_agent TEXT,
    UNIQUE (listener_id, phase, track, instrument, config)
);
"""
# One statement: the rating of the listener's own trial, or nothing (rowcount 0) when the clip
# is not in their session. ON CONFLICT can only meet the listener's own row.
RATE = """
INSERT INTO ratings (listener_id, session, phase, track, instrument, config, role, attention,
                     score, position, time, user_agent)
SELECT t.listener_id, l.session, t.phase, t.track, t.instrument, t.config, t.role,
       t.phase = 'test' AND t.role != 'system', ?, t.position, ?, ?
FROM trials t JOIN listeners l ON l.id = t.listener_id
WHERE t.listener_id = ? AND t.clip_id = ?
ON CONFLICT (listener_id, phase, track, instrument, config)
DO UPDATE SET score = excluded.score, time = excluded.time, user_agent = excluded.user_agent
"""
RATING_COLUMNS = (
    "listener",
    "session",
    "phase",
    "track",
    "instrument",
    "config",
    "role",
    "attention",
    "score",
    "position",
    "time",
    "user_agent",
    "headphones",
    "expertise",
)


@dataclass(frozen=True)
class Rating:
    """One stored rating, with its listener's start-page answers (``RATING_COLUMNS``)."""

    listener: int
    session: str
    phase: str
    track: str
    instrument: str
    config: str
    role: str
    attention: bool
    score: int
    position: int
    time: float
    user_agent: str | None = None
    headphones: bool | None = None
    expertise: str | None = None


@dataclass(frozen=True)
class SessionTrial:
    """A trial of a stored session: its opaque ``clip_id``, its ``position`` and the trial."""

    clip_id: str
    position: int
    trial: Trial


def new_token() -> str:
    """A random, unguessable listener token (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RatingStore:
    """The database at ``path`` (created with its tables unless ``create`` is false, when it
    must already be a listening-test database). Use as a context manager or :meth:`close`."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        path = Path(path)
        if not create and not path.is_file():
            raise UserError(f"{path}: no such database")
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
            if create and (not tables or "meta" in tables):
                self._conn.executescript(SCHEMA)
                self._conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('format', ?), ('version', ?)",
                    (FORMAT, VERSION),
                )
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise UserError(f"{path}: not a usable SQLite database ({err})") from None
        found, version = self.meta("format"), self.meta("version")
        if found != FORMAT or version != VERSION:
            self._conn.close()
            if found != FORMAT:
                raise UserError(f"{path}: not a mel2mel listening-test database")
            raise UserError(
                f"{path}: a listening-test database of version {version!r}; this "
                f"mel2mel reads version {VERSION}"
            )

    def close(self) -> None:
        """Close the connection (every rating is already committed)."""
        self._conn.close()

    def __enter__(self) -> RatingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    @property
    def journal_mode(self) -> str:
        """The journal mode in force (``"wal"``)."""
        return str(self._query("PRAGMA journal_mode")[0][0])

    def meta(self, key: str) -> str | None:
        """A value of the ``meta`` table, or ``None``."""
        try:
            rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        except sqlite3.OperationalError:  # no meta table: not our database
            return None
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the ``meta`` table (the gallery's configuration labels, say)."""
        self._query("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def add_listener(
        self,
        token: str,
        trials: list[Trial],
        *,
        session: str,
        headphones: bool | None = None,
        expertise: str | None = None,
        user_agent: str | None = None,
    ) -> int:
        """Store a new listener (by ``token``'s digest) and their session, in one transaction;
        returns the listener's id."""
        ids = set()
        while len(ids) < len(trials):
            ids.add(secrets.token_urlsafe(9))
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(
                    "INSERT INTO listeners (token_sha256, session, created, headphones, "
                    "expertise, user_agent) VALUES (?, ?, ?, ?, ?, ?)",
                    (_digest(token), session, time.time(), headphones, expertise, user_agent),
                )
                listener = int(cur.lastrowid or 0)
                cur.executemany(
                    "INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (listener, i, clip_id, t.phase, *t.key, t.role, t.example)
                        for i, (clip_id, t) in enumerate(zip(sorted(ids), trials, strict=True))
                    ],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return listener

    def listener(self, token: str) -> int | None:
        """The id of the listener whose token this is, or ``None``."""
        rows = self._query("SELECT id FROM listeners WHERE token_sha256 = ?", (_digest(token),))
        return int(rows[0][0]) if rows else None

    def listener_count(self) -> int:
        """How many listeners have started."""
        return int(self._query("SELECT COUNT(*) FROM listeners")[0][0])

    def session(self, listener: int) -> list[SessionTrial]:
        """The listener's trials in session order."""
        rows = self._query(
            "SELECT clip_id, position, phase, track, instrument, config, role, example "
            "FROM trials WHERE listener_id = ? ORDER BY position",
            (listener,),
        )
        return [SessionTrial(r[0], r[1], Trial(ClipKey(*r[3:6]), r[2], r[6], r[7])) for r in rows]

    def trial(self, listener: int, clip_id: str) -> Trial | None:
        """The trial of the listener's session whose opaque id is ``clip_id``, or ``None``."""
        rows = self._query(
            "SELECT phase, track, instrument, config, role, example FROM trials "
            "WHERE listener_id = ? AND clip_id = ?",
            (listener, clip_id),
        )
        return Trial(ClipKey(*rows[0][1:4]), rows[0][0], *rows[0][4:]) if rows else None

    def answers(self, listener: int) -> dict[str, int]:
        """The listener's scores so far, by the opaque clip id of their session."""
        rows = self._query(
            "SELECT t.clip_id, r.score FROM ratings r JOIN trials t ON t.listener_id = "
            "r.listener_id AND t.phase = r.phase AND t.track = r.track AND t.instrument = "
            "r.instrument AND t.config = r.config WHERE r.listener_id = ?",
            (listener,),
        )
        return {clip: int(score) for clip, score in rows}

    def rate(
        self,
        listener: int,
        clip_id: str,
        score: int,
        *,
        user_agent: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Store (or update) the listener's ``score`` of the clip ``clip_id`` of their
        session, committed before returning; ``False`` when the clip is not in their session.
        """
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise ValueError(f"a score is an integer 1..5, got {score!r}")
        args = (score, time.time() if now is None else now, user_agent, listener, clip_id)
        with self._lock:
            return self._conn.execute(RATE, args).rowcount == 1

    def ratings(self) -> list[Rating]:
        """Every stored rating, with its listener's answers, in listener and session order."""
        rows = self._query(
            "SELECT r.listener_id, r.session, r.phase, r.track, r.instrument, r.config, r.role, "
            "r.attention, r.score, r.position, r.time, r.user_agent, l.headphones, l.expertise "
            "FROM ratings r JOIN listeners l ON l.id = r.listener_id "
            "ORDER BY r.listener_id, r.position"
        )
        return [
            Rating(*r[:7], bool(r[7]), *r[8:12], None if r[12] is None else bool(r[12]), r[13])
            for r in rows
        ]

    def config_labels(self) -> dict[str, str]:
        """The configuration labels last stored by a server (``meta`` key ``configs``)."""
        text = self.meta("configs")
        return dict(json.loads(text)) if text else {}
