"""Sessions: training first (not counted), balanced and shuffled test trials, hidden
attention checks, one order per listener that a reload finds again; the gallery reader."""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter

import pytest

from mel2mel.errors import UserError
from mel2mel.listening.design import plan_session, seed_of
from mel2mel.listening.site import Site, load_site
from mel2mel.listening.store import RatingStore, new_token


def test_training_then_balanced_test_with_attention_checks(site_dir):
    site = load_site(site_dir)
    plan = plan_session(site, seed_of("listener-a"), trials=20, training=4)
    training, test = plan[:4], plan[4:]
    assert [t.phase for t in training] == ["training"] * 4
    assert [(t.key.config, t.example) for t in training[:2]] == [
        ("original", "best"),
        ("anchor", "worst"),
    ]
    assert {t.role for t in training[2:]} == {"system"} and not any(t.attention for t in plan[:4])
    pair = training[0].key[:2]
    assert {t.key[:2] for t in training} == {pair}
    assert [t.phase for t in test] == ["test"] * 20
    assert all(t.key[:2] != pair for t in test)  # the training pair is not tested
    # 5 configurations x 4 trials; each clip once; the five other pairs used 4 times each
    assert Counter(t.key.config for t in test) == dict.fromkeys(site.configs, 4)
    assert len({t.key for t in test}) == 20
    assert set(Counter(t.key[:2] for t in test).values()) == {4}
    checks = [t for t in test if t.attention]
    assert {t.role for t in checks} == {"reference", "anchor"} and len(checks) == 8
    assert all(t.example is None for t in test)  # hidden: nothing tells them apart


def test_orders_differ_between_listeners_and_repeat_for_one(site_dir):
    site = load_site(site_dir)
    a1 = plan_session(site, seed_of("token-a"), trials=20)
    a2 = plan_session(site, seed_of("token-a"), trials=20)
    b = plan_session(site, seed_of("token-b"), trials=20)
    assert a1 == a2
    assert [t.key for t in a1] != [t.key for t in b]
    assert [t.key.config for t in a1[4:]] != [t.key.config for t in b[4:]]
    for plan in (a1, b):  # shuffled: not in runs of one configuration (about 3 of 19 pairs)
        configs = [t.key.config for t in plan[4:]]
        assert sum(x == y for x, y in itertools.pairwise(configs)) < 8


def test_short_and_long_sessions(site_dir):
    site = load_site(site_dir)
    short = plan_session(site, 7, trials=3, training=0)
    assert len(short) == 3 and {"original", "anchor"} <= {t.key.config for t in short}
    everything = plan_session(site, 7, trials=1000)
    assert len(everything) == 4 + 25  # all clips of the five untrained pairs, once each
    assert len({(t.phase, t.key) for t in everything}) == len(everything)


def test_a_gallery_without_an_anchor(site_dir):
    full = load_site(site_dir)
    site = Site(
        full.root,
        full.title,
        {n: c for n, c in full.configs.items() if n != "anchor"},
        {k: p for k, p in full.audio.items() if k.config != "anchor"},
    )
    plan = plan_session(site, 3, trials=8)
    assert [(t.key.config, t.example) for t in plan[:1]] == [("original", "best")]
    assert [t.role for t in plan[1:4]] == ["system"] * 3 and plan[4].phase == "test"
    assert Counter(t.key.config for t in plan[4:]) == dict.fromkeys(site.configs, 2)
    assert {t.role for t in plan if t.attention} == {"reference"}


def test_a_reload_finds_the_same_session(tmp_path, site_dir):
    site = load_site(site_dir)
    token = new_token()
    with RatingStore(tmp_path / "r.sqlite") as store:
        me = store.add_listener(token, plan_session(site, seed_of(token)), session="s")
        first = store.session(me)
    with RatingStore(tmp_path / "r.sqlite") as store:
        again = store.session(store.listener(token))
    assert again == first and [t.trial for t in first] == plan_session(site, seed_of(token))
    assert len(first) == 4 + 25  # the default 40 trials, capped by this small gallery


def test_select_keeps_the_attention_checks(site_dir):
    site = load_site(site_dir).select(["mulaw8"])
    assert list(site.configs) == ["original", "mulaw8", "anchor"]
    assert {k.config for k in site.audio} == set(site.configs)
    with pytest.raises(UserError, match="no configuration 'wavenet'"):
        load_site(site_dir).select(["wavenet"])


def _broken(tmp_path, site_dir, change) -> None:
    folder = tmp_path / "site"
    shutil.copytree(site_dir, folder)
    data = json.loads((folder / "gallery.json").read_text())
    change(data)
    (folder / "gallery.json").write_text(json.dumps(data))
    load_site(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other"), "not a mel2mel gallery"),
        (lambda d: d.update(version=2), "gallery version 2"),
        (lambda d: d["configs"][1].update(role="reference"), "exactly one"),
        (lambda d: d["configs"][1].update(role="anchor"), "at most one"),
        (lambda d: d["configs"][1].update(role="judge"), "has role 'judge'"),
        (lambda d: d["clips"][0].update(config="nope"), "unknown configuration"),
        (lambda d: d["clips"][0].update(audio="../../etc/passwd"), "leaves the gallery"),
        (lambda d: d["clips"][0].update(audio="/etc/passwd"), "leaves the gallery"),
        (lambda d: d["clips"][0].update(audio="audio/missing.ogg"), "is missing"),
        (lambda d: d.update(clips=[]), "non-empty list"),
    ],
)
def test_bad_galleries_are_refused(tmp_path, site_dir, change, message):
    with pytest.raises(UserError, match=message):
        _broken(tmp_path, site_dir, change)
