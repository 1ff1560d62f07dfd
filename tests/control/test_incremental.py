"""Incremental loads: ``KubernetesSource.changes()`` + ``ObjectCache.apply_changes``.

The rule they keep: applying every ``changes()`` in turn leaves the cache as
``apply(load())`` would, while parsing only what changed.
"""

from __future__ import annotations

import copy

import pytest

from control.cache import ObjectCache
from control.objects.raw import KObject
from control.sources.files import Loaded
from control.objects import validation
from control.objects.resources import ObjectKey
from tests.control.sources.kubernetes.fixtures import (  # noqa: F401  (fixtures)
    _backlog, caught_up, gateway, kube, route, servers, service, sources, tls_secret, until)

FILE = "kubernetes"
R1 = ObjectKey("HTTPRoute", "default", "r1")


def kobj(raw: dict) -> KObject:
    return KObject(raw, FILE, 0)


def _path(cache: ObjectCache, key: ObjectKey) -> str:
    return cache.get(key).spec.rules[0].matches[0].path.value


# --- ObjectCache.apply_changes ----------------------------------------------------------


def test_apply_changes_reports_a_change_only_when_objects_change():
    cache = ObjectCache()
    assert cache.apply_changes([kobj(route("r1")), kobj(service("web"))]) is True
    assert len(cache) == 2 and _path(cache, R1) == "/"
    assert cache.apply_changes([kobj(route("r1"))]) is False  # the same again
    with_status = route("r1")
    with_status["status"] = {"parents": []}
    with_status["metadata"]["annotations"] = {"unread": "x"}
    assert cache.apply_changes([kobj(with_status)]) is False
    assert cache.apply_changes([kobj(route("r1", path="/v2"))]) is True
    assert _path(cache, R1) == "/v2"
    assert cache.apply_changes([], []) is False


def test_apply_changes_deletes_and_keeps_the_rest_unparsed(monkeypatch):
    cache = ObjectCache()
    cache.apply_changes([kobj(route(f"r{i}")) for i in range(5)])
    parsed = []
    real = validation.parse
    monkeypatch.setattr(validation, "parse", lambda obj: parsed.append(obj.name) or real(obj))
    assert cache.apply_changes([kobj(route("r9"))], [kobj(route("r1"))]) is True
    assert parsed == ["r9"]  # only the changed object
    assert R1 not in cache and ObjectKey("HTTPRoute", "default", "r9") in cache
    assert cache.apply_changes([], [kobj(route("never-seen"))]) is False


def test_apply_changes_invalid_version_keeps_the_last_good_one():
    cache = ObjectCache()
    assert cache.apply_changes([kobj(route("r1", path="/good"))])
    assert cache.apply_changes([kobj(route("r1", path="no-slash"))]) is False
    assert _path(cache, R1) == "/good"
    assert len(cache.errors) == 1 and "keeping the last good version" in str(cache.errors[0])
    assert cache.apply_changes([kobj(route("new", path="no-slash"))]) is False
    assert ObjectKey("HTTPRoute", "default", "new") not in cache
    assert "rejected:" in str(cache.errors[0]) and "new" in str(cache.errors[0])
    assert cache.apply_changes([kobj(route("r1", path="/fixed"))]) is True
    assert cache.errors == ()  # errors are the last call's only


def test_apply_changes_unsupported_kind_is_a_warning():
    cache = ObjectCache()
    odd = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert cache.apply_changes([kobj(odd)]) is False
    assert len(cache) == 0 and len(cache.warnings) == 1


def test_apply_changes_objects_stay_sorted_and_fresh():
    cache = ObjectCache()
    cache.apply_changes([kobj(route("b")), kobj(route("a"))])
    first = cache.objects()
    assert [o.name for o in first] == ["a", "b"]
    assert cache.objects() is first  # cached until something changes
    cache.apply_changes([kobj(route("c"))], [kobj(route("a"))])
    assert [o.name for o in cache.objects()] == ["b", "c"]


def test_apply_changes_matches_apply_of_the_whole_load():
    objs = {f"r{i}": route(f"r{i}", path=f"/p{i}") for i in range(6)}
    full, inc = ObjectCache(), ObjectCache()
    inc.apply_changes([kobj(o) for o in objs.values()])
    steps = [({"r1": route("r1", path="/x")}, []), ({"r7": route("r7")}, ["r2"]),
             ({"r3": route("r3", path="bad")}, []), ({}, ["r3"]), ({"r3": route("r3")}, [])]
    for upserts, deletes in steps:
        old = {name: objs[name] for name in deletes}
        objs.update(upserts)
        for name in deletes:
            del objs[name]
        changed_full = full.apply(Loaded(objects=[kobj(o) for o in objs.values()], files=[FILE]))
        changed_inc = inc.apply_changes([kobj(o) for o in upserts.values()],
                                        [kobj(o) for o in old.values()])
        assert inc.objects() == full.objects()
        assert changed_inc == changed_full or not full.objects()  # full's first apply differs


# --- KubernetesSource.changes ---------------------------------------------------------------


def _keys(objs) -> set[tuple[str, str, str]]:
    return {(o.kind, o.namespace, o.name) for o in objs}


def test_changes_first_everything_then_only_what_changed(kube, sources):
    kube.apply(service("web"))
    kube.apply(route("r1"))
    source = sources(kube.url)
    first = source.changes()
    assert _keys(first.upserts) >= {("Service", "default", "web"), ("HTTPRoute", "default", "r1")}
    assert first.deletes == []
    assert source.changes().upserts == []  # nothing since

    kube.apply(route("r2"))
    kube.apply(route("r1", path="/v2"))
    kube.delete("v1", "Service", "web")
    caught_up(source, kube, "HTTPRoute")
    caught_up(source, kube, "Service")
    ch = source.changes()
    assert _keys(ch.upserts) == {("HTTPRoute", "default", "r1"), ("HTTPRoute", "default", "r2")}
    assert _keys(ch.deletes) == {("Service", "default", "web")}


def test_changes_applied_in_turn_equal_a_full_load(kube, sources):
    kube.apply(service("web"))
    for i in range(4):
        kube.apply(route(f"r{i}"))
    source = sources(kube.url)
    full, inc = ObjectCache(), ObjectCache()
    steps = [
        lambda: kube.apply(route("r1", path="/one")),
        lambda: (kube.apply(route("r9")), kube.delete(f"{'gateway.networking.k8s.io/v1'}", "HTTPRoute", "r0")),
        lambda: kube.apply(route("r2", path="bad")),  # invalid: the last good one stays
        lambda: kube.apply(service("web", port=81)),
        lambda: kube.apply(gateway()),
        lambda: kube.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "r2"),
    ]
    for step in [lambda: None, *steps]:
        step()
        for watch in ("HTTPRoute", "Service", "Gateway"):
            caught_up(source, kube, watch)
        full.apply(source.load())
        ch = source.changes()
        inc.apply_changes(ch.upserts, ch.deletes)
        assert inc.objects() == full.objects()


def test_changes_hand_out_secrets_while_referenced(kube, sources, monkeypatch):
    # The typed cache does not read Secrets yet; pretend it does to see what
    # changes() hands out (membership in validation.KINDS is all it checks).
    monkeypatch.setitem(validation.KINDS, ("v1", "Secret"), object)
    kube.apply(tls_secret("cert"))
    kube.apply(tls_secret("other"))
    source = sources(kube.url)
    secret = ("Secret", "default", "cert")
    assert secret not in _keys(source.changes().upserts)

    kube.apply(gateway(secret="cert"))
    until(lambda: ("Gateway", "default", "gw") in _keys(source.load().objects), what="the Gateway")
    ch = source.changes()
    assert secret in _keys(ch.upserts) and ("Secret", "default", "other") not in _keys(ch.upserts)
    assert source.changes().upserts == []

    kube.apply(tls_secret("cert", value="b"))
    caught_up(source, kube, "Secret [type=kubernetes.io/tls]")
    ch = source.changes()
    assert _keys(ch.upserts) == {secret}
    assert ch.upserts[0].raw["data"]["tls.crt"] == tls_secret("cert", value="b")["data"]["tls.crt"]

    kube.apply(gateway())  # the reference is gone
    caught_up(source, kube, "Gateway")
    ch = source.changes()
    assert secret in _keys(ch.deletes)
    kube.apply(tls_secret("cert", value="c"))
    caught_up(source, kube, "Secret [type=kubernetes.io/tls]")
    assert secret not in _keys(source.changes().upserts)
