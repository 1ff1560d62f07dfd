"""The raw-request corpus against real workers and capture upstreams.

One test per file in corpus/valid and corpus/invalid (format: corpus/README.md).
Each sends the file's bytes on a new connection to a gateway on loopback,
reads what comes back, and checks it against the file's header. Every case,
whatever it expects, must also leave the upstreams nothing ambiguous: no
bytes their strict parser refuses, and never the word "smuggled" (the mark
of a request hidden inside another).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from tests.hardening.corpus import all_cases, decode
from tests.hardening.gateways import GatewayDown
from tests.hardening.wire import connect, read_responses, send, wait_closed

CASES = all_cases()
FOLLOWUP = b"/__followup"
RESPONSE_TIMEOUT = 3.0  # for every expected response, together
CLOSE_WAIT = 1.0  # for the close after them


def _describe(case, out, seen) -> str:
    lines = [f"{case.name}: {case.about}", f"expected {' '.join(map(str, case.expect))}"
             f"{', then close' if case.close else ''}"]
    lines.append("got " + (" ".join(
        f"{r.status}" + (f"(+{r.interim})" if r.interim else "") for r in out.responses) or "no response")
        + (", closed" if out.closed else ", still open") + (" (timed out)" if out.timed_out else ""))
    if out.error:
        lines.append(f"unparsable response: {out.error}")
    if out.leftover:
        lines.append(f"bytes after the expected responses: {out.leftover[:200]!r}")
    for s in seen:
        lines.append(f"upstream {s.backend} got {s.request.method.decode()} {s.request.target!r}")
    return "\n".join(lines)


def _statuses_ok(case, out) -> bool:
    if out.error is not None or out.leftover:
        return False
    for i, slot in enumerate(case.expect):
        if i < len(out.responses):
            if out.responses[i].status not in slot.allowed:
                return False
        elif None not in slot.allowed or not out.closed:
            return False  # no answer is only right if the gateway closed
    return True


def _check_upstream(spec: dict, seen, msg) -> None:
    req = seen.request
    if "backend" in spec:
        assert seen.backend == spec["backend"], msg
    if "method" in spec:
        assert req.method.decode() == spec["method"], msg
    if "path" in spec:
        assert req.target == decode(spec["path"]), msg
    if "version" in spec:
        assert req.version.decode() == spec["version"], msg
    for name, value in (spec.get("headers") or {}).items():
        got = req.header(name)
        assert got is not None, f"{msg}\nupstream request lacks {name}: {req.headers}"
        if value is not None:
            assert got == decode(str(value)), f"{msg}\n{name}: {got!r}"
    for name in spec.get("lacks") or []:
        assert req.header(name) is None, f"{msg}\nupstream request has {name}: {req.header(name)!r}"
    if "body" in spec:
        assert req.body == decode(spec["body"]), f"{msg}\nupstream body {req.body[:200]!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case, corpus_gateways, captures):
    try:
        _, port = corpus_gateways.get(case.gateway)
    except GatewayDown as exc:
        pytest.fail(str(exc))
    marks = captures.mark()
    follow = None
    try:
        with connect(port) as sock:
            send(sock, case.raw)
            out = read_responses(sock, len(case.expect), RESPONSE_TIMEOUT)
            ok = _statuses_ok(case, out)
            # The statuses first (so a failure is quick), then the close.
            if ok and not out.closed and (case.close or None in case.expect[-1].allowed):
                out.closed, out.leftover = wait_closed(sock, CLOSE_WAIT)
            elif ok and case.close is False and not out.closed:
                # Still usable: a next request on the same connection is answered.
                send(sock, b"GET %s HTTP/1.1\r\nhost: example.com\r\n\r\n" % FOLLOWUP)
                follow = read_responses(sock, 1, RESPONSE_TIMEOUT)
    finally:
        # Whatever the gateway still sends upstream belongs to this case, not the next.
        captures.settle(quiet=0.1)
    seen_all, raw, errors = captures.since(marks)
    seen = [s for s in seen_all if s.request.target != FOLLOWUP]
    msg = _describe(case, out, seen)
    assert not errors, f"{msg}\nambiguous bytes reached an upstream:\n" + "\n".join(errors)
    assert b"smuggled" not in raw.lower(), f"{msg}\nsmuggled bytes reached an upstream: {raw[:500]!r}"
    assert _statuses_ok(case, out), msg
    if case.close:
        assert out.closed, f"{msg}\nthe connection stayed open"
    elif case.close is False:
        assert not out.closed, f"{msg}\nthe connection was closed"
        assert follow is not None and [r.status for r in follow.responses] == [200], f"{msg}\nfollow-up: {follow}"
    assert len(seen) == case.upstream_requests, msg
    for spec, s in zip(case.upstream, seen):
        _check_upstream(spec, s, msg)
    if case.location is not None:
        loc = out.responses[0].header("location")
        assert loc is not None and urlsplit(loc.decode()).path == case.location, f"{msg}\nlocation: {loc!r}"


def test_corpus_workers_never_restarted(corpus_gateways):
    """After the whole corpus, no worker of any gateway crashed or was replaced."""
    assert corpus_gateways.started, "no corpus gateway ran"
    for profile, (gw, _) in corpus_gateways.started.items():
        for w in json.loads(gw.admin("/debug/workers")[2]):
            assert w["alive"] and w["restarts"] == 0, f"{profile}: {w}\n{gw.log()[-3000:]}"
