"""Header rules shared by both directions of the proxy.

Hop-by-hop headers (RFC 9110 7.6.1) describe one connection, not the message:
they are never forwarded, in either direction, and neither is any header a
``Connection`` header nominates. ``Transfer-Encoding`` and ``Content-Length``
are framing: the proxy re-frames each hop itself, so they are handled by the
code that frames, not copied blindly.
"""

from __future__ import annotations

# Lower-case names. The response side matches the same names with one regex
# (dataplane/upstream/connection.py); keep the two lists in step.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Headers the proxy consumes or sets itself on the request side.
REQUEST_SPECIAL = HOP_BY_HOP | {
    b"host",
    b"transfer-encoding",
    b"content-length",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-request-id",  # kept when valid, else replaced (dataplane/requestid.py)
}


def nominated(value: bytes) -> set[bytes]:
    """Header names a Connection header value nominates (lower-case)."""
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


# --- classification, cached by the exact bytes of the name ---------------------
# Header names repeat endlessly (same clients, same upstreams), so the hot path
# asks one dict instead of lower-casing and testing each name. The caches are
# bounded: a client inventing names cannot grow them without limit.

# UA and TRACESTATE pass upstream too; the access log and tracing read them.
# TRACEPARENT passes unchanged while tracing is off; on, the tracer sends its
# own (dataplane/tracing.py).
(PASS, HOST, XFF, TE, CONNECTION, LENGTH, DROP, EXPECT, UNDERSCORE, UPGRADE, RID, UA, TRACEPARENT,
 TRACESTATE) = range(14)
_REQUEST_CODES = {
    b"host": HOST, b"x-forwarded-for": XFF, b"transfer-encoding": TE,
    b"connection": CONNECTION, b"content-length": LENGTH, b"expect": EXPECT,
    b"upgrade": UPGRADE, b"x-request-id": RID, b"user-agent": UA, b"traceparent": TRACEPARENT,
    b"tracestate": TRACESTATE,
}
_CACHE_LIMIT = 4096
request_class: dict[bytes, int] = {}


def classify_request(name: bytes) -> int:
    lname = name.lower()
    code = _REQUEST_CODES.get(lname, DROP if lname in REQUEST_SPECIAL else PASS)
    if code == PASS and b"_" in name:
        # X_Forwarded_For and X-Forwarded-For are one header to some
        # upstreams (CGI, PHP) and two to us: the worker's policy decides.
        code = UNDERSCORE
    if len(request_class) < _CACHE_LIMIT:
        request_class[name] = code
    return code


# --- header edits (filters) ------------------------------------------------------


def header_value(headers: list[tuple[bytes, bytes]], lname: bytes) -> bytes:
    """Every value of a request header (``lname`` lower-case), joined with ", "."""
    values = [v for n, v in headers if n.lower() == lname]
    return values[0] if len(values) == 1 else b", ".join(values)


def drop_lines(lines: list[bytes], names: frozenset[bytes]) -> list[bytes]:
    """``lines`` ("Name: value\\r\\n" each) without those whose name is in ``names``."""
    return [h for h in lines if h.split(b":", 1)[0].strip().lower() not in names]


def drop_from_block(block: bytes, names: frozenset[bytes]) -> bytes:
    """A header block ("\\r\\nA: 1\\r\\nB: 2\\r\\n") without the named lines."""
    kept = [seg for seg in block.split(b"\r\n") if seg and seg.split(b":", 1)[0].strip().lower() not in names]
    return b"\r\n" + b"".join(seg + b"\r\n" for seg in kept) if kept else b"\r\n"


def replace_prefix(path: bytes, prefix: bytes, replacement: bytes) -> bytes:
    """Gateway API ReplacePrefixMatch: /foo/bar with prefix /foo and "/xyz" is
    /xyz/bar; with "" or "/" it is /bar; never an empty path."""
    return replacement.rstrip(b"/") + path[len(prefix.rstrip(b"/")):] or b"/"
