"""translate()'s Memo and compile_table()'s CompileMemo change nothing but the
cost: with or without them, the same objects give an equal Translation (IR and
status) and an equal table, over random edit sequences of every golden case's
objects - removals, returns, edits and re-parses."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest

from control.cache import ObjectCache
from control.compile import CompileMemo, compile_table
from control.objects.raw import KObject
from control.sources.files import FileSource
from control.translate import Memo, translate

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(p for p in TESTDATA.iterdir()
               if p.name.endswith(".in.yaml") or (p.is_dir() and p.name.endswith(".in")))


def _identity(obj: KObject) -> tuple:
    return (obj.kind, obj.namespace, obj.name)


def _edit(raw: dict, rng: random.Random) -> dict:
    """A changed copy: an edited path, hostname, port, weight or label."""
    raw = copy.deepcopy(raw)
    spec = raw.get("spec") or {}
    choice = rng.randrange(5)
    if choice == 0:
        for rule in spec.get("rules") or ():
            for match in rule.get("matches") or ():
                if isinstance(match.get("path"), dict) and match["path"].get("type") != "RegularExpression":
                    match["path"]["value"] = f"/edited{rng.randrange(3)}"
                    return raw
    if choice == 1 and spec.get("hostnames"):
        spec["hostnames"] = [f"h{rng.randrange(3)}.example.com"]
        return raw
    if choice == 2:
        for rule in spec.get("rules") or ():
            for ref in rule.get("backendRefs") or ():
                ref["weight"] = rng.randrange(3)
                return raw
    if choice == 3 and raw.get("kind") == "EndpointSlice":
        for ep in raw.get("endpoints") or ():
            ep["conditions"] = {"ready": rng.random() < 0.5}
        return raw
    if choice == 4 and raw.get("kind") == "Gateway":
        for lst in spec.get("listeners") or ():
            lst["hostname"] = f"*.h{rng.randrange(2)}.example.com"
            return raw
    raw["metadata"].setdefault("labels", {})["memo-test"] = str(rng.randrange(3))
    return raw


def _same(a, b, compiled: CompileMemo | None = None) -> None:
    assert a.ir == b.ir
    assert a.status.to_builtins() == b.status.to_builtins()
    if compiled is not None:
        assert compile_table(a.ir) == compile_table(b.ir, memo=compiled)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name.split(".")[0])
def test_memoised_translation_equals_a_fresh_one_after_every_edit(case: Path):
    loaded = FileSource(case).load()
    world = {_identity(o): o for o in loaded.objects}
    keys = sorted(world)
    rng = random.Random(case.name)
    cache, memo, compiled = ObjectCache(), Memo(), CompileMemo()
    cache.apply_changes(list(world.values()))
    _same(translate(cache.objects()), translate(cache.objects(), memo=memo), compiled)
    removed: dict[tuple, KObject] = {}
    reused = 0
    for _ in range(40):
        key = rng.choice(keys)
        upserts, deletes = [], []
        action = rng.randrange(4)
        if key in removed and action < 2:
            upserts.append(removed.pop(key))
        elif key not in removed and action == 0:
            removed[key] = world[key]
            deletes.append(world[key])
        elif key not in removed and action == 1:  # an equal object, parsed anew
            upserts.append(KObject(copy.deepcopy(world[key].raw), "x", 0))
        elif key not in removed:
            world[key] = KObject(_edit(world[key].raw, rng), "x", 0)
            upserts.append(world[key])
        cache.apply_changes(upserts, deletes)
        fresh = translate(cache.objects())
        memoised = translate(cache.objects(), memo=memo)
        _same(fresh, memoised, compiled)
        reused += memo.routes.reused + compiled.reused
    # The memo is not inert: some route outcomes were reused along the way.
    if any(o.kind in ("HTTPRoute", "FluxGateRoute") for o in loaded.objects):
        assert reused > 0


def test_a_route_edit_recomputes_that_route_only():
    routes = [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": f"r{i}", "namespace": "default"},
               "spec": {"parentRefs": [{"name": "gw"}],
                        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": f"/r{i}"}}],
                                   "backendRefs": [{"name": "svc", "port": 80}]}]}} for i in range(20)]
    base = [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"gatewayClassName": "fluxgate", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "default"},
         "spec": {"ports": [{"port": 80}]}},
    ]
    cache, memo = ObjectCache(), Memo()
    cache.apply_changes([KObject(o, "x", 0) for o in base + routes])
    translate(cache.objects(), memo=memo)
    assert (memo.routes.computed, memo.routes.reused) == (20, 0)
    edited = copy.deepcopy(routes[3])
    edited["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/new"
    cache.apply_changes([KObject(edited, "x", 0)])
    result = translate(cache.objects(), memo=memo)
    assert (memo.routes.computed, memo.routes.reused) == (1, 19)
    assert "/new" in [m.path.value for route in result.ir.routes for rule in route.rules for m in rule.matches]
    # A Service change is context: every route is computed again.
    svc = copy.deepcopy(base[1])
    svc["spec"]["ports"][0]["port"] = 81
    cache.apply_changes([KObject(svc, "x", 0)])
    translate(cache.objects(), memo=memo)
    assert (memo.routes.computed, memo.routes.reused) == (20, 0)


def test_a_route_edit_patches_the_compiled_layout_and_equals_a_fresh_compile():
    # compile_table's _patch relies on each listener's attachments being sorted
    # by route ref, and moves only the edited route (the rest is not rebuilt).
    objs = [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "gw", "namespace": "default"},
         "spec": {"gatewayClassName": "fluxgate", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "default"},
         "spec": {"ports": [{"port": 80}]}},
    ]
    routes = [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": f"r{i}", "namespace": "default"},
               "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [f"h{i % 7}.example.com"],
                        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": f"/r{i}"}}],
                                   "backendRefs": [{"name": "svc", "port": 80}]}]}} for i in range(50)]
    cache, memo, compiled = ObjectCache(), Memo(), CompileMemo()
    cache.apply_changes([KObject(o, "x", 0) for o in objs + routes])
    first = translate(cache.objects(), memo=memo)
    for lst in first.ir.listeners:
        refs = [att.route for att in lst.attachments]
        assert refs == sorted(refs)
    compile_table(first.ir, memo=compiled)
    layout = compiled.state
    edited = copy.deepcopy(routes[10])
    edited["spec"]["hostnames"] = ["h6.example.com"]  # moves to another vhost (it was h3)
    cache.apply_changes([KObject(edited, "x", 0)])
    result = translate(cache.objects(), memo=memo)
    table = compile_table(result.ir, memo=compiled)
    assert compiled.state is layout and compiled.compiled == 1  # patched, not rebuilt
    assert table == compile_table(result.ir)
