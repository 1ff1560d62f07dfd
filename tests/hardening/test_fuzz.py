"""Generated hostile requests (hypothesis) against real workers.

Inputs are mutations of a few valid requests, pipelined one to three deep:
bytes inserted (CR, LF, NUL, spaces, commas, ...), deleted or truncated,
CRLF turned into LF, lines duplicated, framing headers added or rewritten,
chunk sizes replaced. Every request body carries a complete request line
("GET /smuggled ...") as *data*: if it ever reaches an upstream as a request,
the gateway framed the body differently from the reference parser.

The properties, for every input:
* the workers never crash: a fresh request afterwards is answered 200, and
  no worker restarted by the end;
* nothing ambiguous leaves: the upstream's strict parser accepts every byte;
* body bytes never become a request: the upstream never gets the
  "smuggled" line as a request unless the reference parser (wire.py) saw it
  as one too;
* (a property of its own) the upstream never gets more requests than the
  strict reference finds complete before its first error: whatever the
  reference refuses, the gateway refuses too;
* the gateway answers or closes within a deadline whenever the input holds
  a complete request or an error (an input that is only a valid prefix may
  wait: the header/body deadlines are tested in test_faults.py).

Runs are derandomised (the same inputs every time) and keep no database.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hardening.gateways import GatewayDown, GatewaySet, corpus_docs
from tests.hardening.wire import connect, parse_requests, read_responses, send

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"
BASES = [
    b"GET /r HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"POST /r HTTP/1.1\r\nHost: example.com\r\nContent-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
    b"POST /r HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    % (len(SMUGGLED), SMUGGLED),
    b"POST /r HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4\r\nGET \r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(SMUGGLED) - 4, SMUGGLED[4:]),
    b"GET /r HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n",
]
BYTES = [b"\r", b"\n", b"\r\n", b"\0", b" ", b"\t", b"\x0b", b":", b",", b";", b"_", b"\x7f", b"\xff",
         b"0", b"5", b"-", b"+", b"\r\n ", b"\r\n\r\n"]
FRAMING_NAMES = [b"Content-Length", b"Transfer-Encoding", b"content-length", b"Transfer-encoding",
                 b"Transfer_Encoding", b"Content-Length ", b" Transfer-Encoding"]
FRAMING_VALUES = [b"0", b"5", b"44", b"+5", b"-1", b"0x5", b"5, 5", b"5 5", b"", b" 5",
                  b"99999999999999999999", b"chunked", b"Chunked", b"chunked, chunked", b"gzip, chunked",
                  b"chunked, gzip", b"identity", b"xchunked", b"chunked\t", b"\x0bchunked"]
CHUNK_SIZES = [b"0", b"5", b"2c", b"0x5", b"-1", b"+5", b"ffffffffffffffffff", b"10000000000000002c",
               b"2C", b"2c ", b" 2c", b"2c;", b"2c;a=\"b", b"", b"g"]
DEADLINE = 10.0  # to answer or close; generous, not a speed claim
PROFILE = {"FLUXGATE_HEADER_TIMEOUT": "2", "FLUXGATE_BODY_TIMEOUT": "2"}


@st.composite
def hostile_requests(draw) -> bytes:
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(BASES), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["insert", "delete", "truncate", "lf", "dup", "framing", "value", "chunk"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(BYTES))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[max(at, 1):]
        elif kind == "lf":
            crlfs = [m.start() for m in re.finditer(rb"\r\n", data)]
            if crlfs:
                del data[draw(st.sampled_from(crlfs))]
        elif kind == "dup":
            lines = [m.start() for m in re.finditer(rb"\r\n", data)]
            if len(lines) > 1:
                i = draw(st.integers(0, len(lines) - 2))
                line = data[lines[i] + 2:lines[i + 1] + 2]
                data[lines[i] + 2:lines[i] + 2] = line
        elif kind == "framing":
            # A framing header after the first request line.
            end = data.find(b"\r\n")
            if end >= 0:
                line = draw(st.sampled_from(FRAMING_NAMES)) + b": " + draw(st.sampled_from(FRAMING_VALUES))
                data[end + 2:end + 2] = line + b"\r\n"
        elif kind == "value":
            m = [m for m in re.finditer(rb"(?i)(content-length|transfer-encoding): ([^\r\n]*)", data)]
            if m:
                hit = draw(st.sampled_from(m))
                data[hit.start(2):hit.end(2)] = draw(st.sampled_from(FRAMING_VALUES))
        elif kind == "chunk":
            m = [m for m in re.finditer(rb"\r\n\r\n([0-9a-f]+)(;ext=1)?\r\n", data)]
            if m:
                hit = draw(st.sampled_from(m))
                data[hit.start(1):hit.end(1)] = draw(st.sampled_from(CHUNK_SIZES))
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory, captures):
    gws = GatewaySet(tmp_path_factory.mktemp("fuzz-gw"), corpus_docs(captures), {"fuzz": PROFILE})
    try:
        gw, port = gws.get("fuzz")
    except GatewayDown as exc:
        gws.stop()
        pytest.fail(str(exc))
    yield gw, port
    gws.stop()


def _check_alive(port: int) -> None:
    with connect(port) as s:
        send(s, b"GET /alive HTTP/1.1\r\nhost: example.com\r\n\r\n")
        out = read_responses(s, 1, DEADLINE)
    assert [r.status for r in out.responses] == [200], f"a fresh request failed afterwards: {out}"


def _run(port: int, captures, data: bytes, strict: bool = False) -> None:
    reference, error, partial = parse_requests(data)
    marks = captures.mark()
    with connect(port) as s:
        send(s, data)
        if reference or error:
            out = read_responses(s, len(reference) + (error is not None), DEADLINE)
            assert out.responses or out.closed, (
                f"neither answered nor closed within {DEADLINE}s: {data!r}\nreference: {len(reference)} requests, "
                f"error {error!r}")
    captures.settle(quiet=0.05)
    seen, _, errors = captures.since(marks)
    why = f"input {data!r}\nreference: {[r.target for r in reference]}, error {error!r}, partial {partial}"
    assert not errors, f"ambiguous bytes reached an upstream: {errors}\n{why}"
    got = [x.request for x in seen if x.request.target != b"/alive"]
    ref_smuggled = sum(b"smuggled" in r.target for r in reference)
    assert sum(b"smuggled" in r.target for r in got) <= ref_smuggled, f"body bytes became a request\n{why}"
    if strict:
        assert len(got) <= len(reference), f"upstream got {[r.target for r in got]}\n{why}"
    _check_alive(port)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hostile_requests())
def test_fuzz_mutated_requests_never_smuggle_crash_or_hang(fuzz_gateway, captures, data):
    _run(fuzz_gateway[1], captures, data)


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hostile_requests())
def test_fuzz_gateway_forwards_no_request_the_strict_reference_refuses(fuzz_gateway, captures, data):
    """At least as strict as the reference: never more upstream requests than it finds before its first error."""
    _run(fuzz_gateway[1], captures, data, strict=True)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=1, max_size=200))
def test_fuzz_random_bytes_never_crash_or_hang(fuzz_gateway, captures, data):
    """Bytes that are not HTTP at all: answered (400) or closed, never forwarded."""
    _run(fuzz_gateway[1], captures, data)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(FRAMING_NAMES + [b"Host", b"X-A"]),
       value=st.binary(max_size=12).filter(lambda v: b"\r\n" not in v))
def test_fuzz_header_values_never_smuggle(fuzz_gateway, captures, name, value):
    """Any bytes as a framing header's value, on a request whose body is a request."""
    data = (b"POST /r HTTP/1.1\r\nHost: example.com\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (name, value, len(SMUGGLED), SMUGGLED))
    _run(fuzz_gateway[1], captures, data, strict=True)


def test_fuzz_workers_never_restarted(fuzz_gateway):
    gw, _ = fuzz_gateway
    for w in json.loads(gw.admin("/debug/workers")[2]):
        assert w["alive"] and w["restarts"] == 0, f"{w}\n{gw.log()[-3000:]}"
