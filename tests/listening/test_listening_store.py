"""The ratings database: WAL, one row per rating, own rows only, every answer committed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mel2mel.errors import UserError
from mel2mel.listening.design import plan_session, seed_of
from mel2mel.listening.site import load_site
from mel2mel.listening.store import RatingStore, new_token


def _start(store: RatingStore, site_dir: Path, trials: int = 8) -> tuple[str, int]:
    token = new_token()
    plan = plan_session(load_site(site_dir), seed_of(token), trials=trials)
    return token, store.add_listener(token, plan, session="s1", headphones=True)


def _rows(path: Path) -> list[tuple]:
    """The ratings as a separate connection sees them (what is committed)."""
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT listener_id, config, score, phase FROM ratings ORDER BY id"
        ).fetchall()


def test_wal_one_row_per_rating_and_resubmit_updates_it(tmp_path, site_dir):
    db = tmp_path / "r.sqlite"
    with RatingStore(db) as store:
        assert store.journal_mode == "wal"
        token, me = _start(store, site_dir)
        assert store.listener(token) == me and store.listener(new_token()) is None
        trials = store.session(me)
        assert [t.position for t in trials] == list(range(12))  # 4 training + 8 test
        for t in trials[:3]:
            assert store.rate(me, t.clip_id, 4)
        assert store.rate(me, trials[1].clip_id, 2)  # re-submit: the same row, updated
        # committed as each call returns: another connection sees them, the store still open
        rows = _rows(db)
        assert [r[2] for r in rows] == [4, 2, 4] and len(rows) == 3
        assert store.answers(me) == {
            t.clip_id: s for t, s in zip(trials[:3], (4, 2, 4), strict=True)
        }
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # kept in the file
        row = conn.execute("SELECT headphones, session FROM listeners").fetchone()
    assert row == (1, "s1")


def test_a_listener_cannot_write_anothers_rows(tmp_path, site_dir):
    with RatingStore(tmp_path / "r.sqlite") as store:
        _, alice = _start(store, site_dir)
        _, bob = _start(store, site_dir)
        a_clip = store.session(alice)[5].clip_id
        assert store.rate(alice, a_clip, 5)
        assert not store.rate(bob, a_clip, 1)  # Alice's clip id is not in Bob's session
        assert not store.rate(bob, "no-such-clip", 1)
        assert [(r.listener, r.score) for r in store.ratings()] == [(alice, 5)]
        b_trial = store.session(bob)[5]
        assert store.rate(bob, b_trial.clip_id, 1)
        assert {(r.listener, r.score) for r in store.ratings()} == {(alice, 5), (bob, 1)}
        with pytest.raises(ValueError):
            store.rate(bob, b_trial.clip_id, 6)
        with pytest.raises(ValueError):
            store.rate(bob, b_trial.clip_id, True)


KILLED = """
import os, sqlite3, sys
from mel2mel.listening.store import RatingStore
store = RatingStore(sys.argv[1])
me, clips = int(sys.argv[2]), sys.argv[3:]
for clip in clips[:3]:
    assert store.rate(me, clip, 3)
# an answer in flight: its transaction is open when the process dies
raw = sqlite3.connect(sys.argv[1], isolation_level=None)
raw.execute("BEGIN IMMEDIATE")
raw.execute("UPDATE ratings SET score = 1")
raw.execute("INSERT INTO ratings (listener_id, session, phase, track, instrument, config, "
            "role, attention, score, position, time) VALUES (?, 's', 'test', 'x', 'y', 'z', "
            "'system', 0, 5, 99, 0)", (me,))
os._exit(9)
"""


def test_a_killed_writer_loses_only_the_answer_in_flight(tmp_path, site_dir):
    db = tmp_path / "r.sqlite"
    with RatingStore(db) as store:
        _, me = _start(store, site_dir)
        clips = [t.clip_id for t in store.session(me)]
    run = subprocess.run([sys.executable, "-c", KILLED, str(db), str(me), *clips], timeout=60)
    assert run.returncode == 9
    rows = _rows(db)
    assert len(rows) == 3 and {(r[0], r[2]) for r in rows} == {(me, 3)}  # nothing of the 4th
    with RatingStore(db) as store:
        assert sorted(store.answers(me)) == sorted(clips[:3])


def test_refuses_what_is_not_its_database(tmp_path):
    with pytest.raises(UserError, match="no such database"):
        RatingStore(tmp_path / "missing.sqlite", create=False)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(UserError, match="not a usable SQLite database"):
        RatingStore(junk)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(UserError, match="not a mel2mel listening-test database"):
        RatingStore(other)
    with sqlite3.connect(other) as conn:  # left as it was
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["t"]
    RatingStore(tmp_path / "new.sqlite").close()
    with sqlite3.connect(tmp_path / "new.sqlite") as conn:
        conn.execute("UPDATE meta SET value = '9' WHERE key = 'version'")
    with pytest.raises(UserError, match="version '9'; this mel2mel reads version 1"):
        RatingStore(tmp_path / "new.sqlite", create=False)
