"""The access log's line: the compiled writer (dataplane/_logline.pyx) and its msgspec fallback agree.

Both must turn any bytes a client sends into one valid JSON object of valid
UTF-8, ending in one newline, with the same fields and values; the e2e tests
(tests/e2e/test_access_log.py) check what the lines say about real requests.
On the pure-Python path (FLUXGATE_NATIVE=false, test_native.py) there is no
compiled writer and only the fallback is checked.
"""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from dataplane import accesslog

try:
    from dataplane._logline import append as compiled_append
except ImportError:  # the pure-Python path
    compiled_append = None

WRITERS = [accesslog._append] + ([compiled_append] if compiled_append is not None else [])
FIELDS = list(accesslog.Line.__struct_fields__)


def _line(writer, **over) -> bytes:
    args = dict(stamp=b"2026-12-07T20:00:00", millis=7, rid=b"abc-1", client=b"127.0.0.1", method=b"GET",
                target=b"/items/42", status=200, sent=1234, received=0, duration_us=12345,
                upstream=msgspec.json.encode("127.0.0.1:8080"), upstream_us=100,
                route=msgspec.json.encode("default/echo"), gateway=msgspec.json.encode("default/gw"),
                ua=b"wrk/4.2.0", trace=b"4bf92f3577b34da6a3ce929d0e0e4736")
    args.update(over)
    batch = bytearray(b"earlier line\n")
    writer(batch, **args)
    assert batch.startswith(b"earlier line\n"), "a line is appended, never written over the batch"
    line = bytes(batch[len(b"earlier line\n"):])
    assert line.endswith(b"\n") and line.count(b"\n") == 1, line
    return line


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__module__)
def test_line_is_one_json_object_with_every_field_in_order(writer):
    line = _line(writer)
    obj = json.loads(line)
    assert list(obj) == FIELDS
    assert obj == {
        "time": "2026-12-07T20:00:00.007Z", "request_id": "abc-1", "client_ip": "127.0.0.1", "method": "GET",
        "path": "/items/42", "status": 200, "bytes": 1234, "request_bytes": 0, "duration_ms": 12.345,
        "upstream": "127.0.0.1:8080", "upstream_ms": 0.1, "route": "default/echo", "gateway": "default/gw",
        "user_agent": "wrk/4.2.0", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__module__)
def test_client_bytes_that_json_must_escape_are_escaped(writer):
    nasty = b'q"uo\\te\n\r\t\x08\x0c\x00\x1f\x7f caf\xe9 \xff'
    line = _line(writer, target=nasty, ua=nasty, rid=nasty, method=nasty, client=nasty)
    obj = json.loads(line.decode("utf-8"))  # valid UTF-8: latin-1 bytes become their code points
    for field in ("path", "user_agent", "request_id", "method", "client_ip"):
        assert obj[field] == nasty.decode("latin-1")


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__module__)
def test_millis_out_of_range_is_refused(writer):
    with pytest.raises(ValueError):
        _line(writer, millis=1000)


@pytest.mark.skipif(compiled_append is None, reason="the pure-Python path has no compiled writer")
@settings(max_examples=300, deadline=None)
@given(rid=st.binary(max_size=64), target=st.binary(max_size=300), ua=st.binary(max_size=200),
       method=st.binary(max_size=12), status=st.integers(0, 999), sent=st.integers(0, 2**63 - 1),
       received=st.integers(0, 2**40), duration_us=st.integers(0, 10**12), upstream_us=st.integers(0, 10**9),
       millis=st.integers(0, 999))
def test_compiled_line_says_what_the_msgspec_line_says(rid, target, ua, method, status, sent, received,
                                                       duration_us, upstream_us, millis):
    over = dict(rid=rid, target=target, ua=ua, method=method, status=status, sent=sent, received=received,
                duration_us=duration_us, upstream_us=upstream_us, millis=millis)
    compiled = _line(compiled_append, **over)
    fallback = _line(accesslog._append, **over)
    assert json.loads(compiled.decode("utf-8")) == json.loads(fallback.decode("utf-8"))
    # Byte for byte, but for how a duration is spelt (12.300 against 12.3).
    assert compiled.split(b',"status"')[0] == fallback.split(b',"status"')[0]
    assert compiled.split(b',"user_agent"')[1] == fallback.split(b',"user_agent"')[1]
