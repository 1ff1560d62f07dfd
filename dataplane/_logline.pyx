# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The access log's line, written in C onto the batch (compiled accelerator of dataplane/accesslog.py).

``append`` writes the same JSON object as accesslog.py's msgspec path
(``_append``: its fallback, used when this module is not built or
FLUXGATE_NATIVE=false; tests/dataplane/test_accesslog.py checks both give
the same object for any bytes). It is here because the line was most of
what the access log costs a request: a 15-field Struct, five decodes and
msgspec's float formatting took about 2 µs of the loop's 18; this takes a
fraction of one.

What must stay true:

* client-controlled bytes (request id, client, method, path, user agent,
  trace id) are escaped as msgspec escapes a latin-1 decoded ``str``: ``"``
  and ``\\`` and control characters escaped, bytes from 0x80 on written as
  their two UTF-8 bytes, so a line is always one valid JSON object of valid
  UTF-8 whatever a client sent;
* ``upstream``, ``route`` and ``gateway`` arrive already encoded (JSON
  strings with their quotes, made once per value by the caller's caches);
* durations are whole microseconds, written as milliseconds with three
  decimals (``12.345``): the same numbers the fallback's floats parse to.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from libc.string cimport memcpy

cdef const char *_HEXDIGITS = b"0123456789abcdef"


cdef inline Py_ssize_t _escaped_size(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    """The bytes ``_escape`` writes for ``s``: at most six per byte."""
    cdef Py_ssize_t i, size = n
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if c < 0x20:
            size += 1 if c in (8, 9, 10, 12, 13) else 5  # \n … or \u00XX
        elif c == 34 or c == 92:
            size += 1
        elif c >= 0x80:
            size += 1
    return size


cdef inline char *_escape(char *p, const unsigned char *s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if 0x20 <= c < 0x80 and c != 34 and c != 92:
            p[0] = <char>c
            p += 1
        elif c >= 0x80:  # latin-1 → UTF-8
            p[0] = <char>(0xC0 | (c >> 6))
            p[1] = <char>(0x80 | (c & 0x3F))
            p += 2
        elif c == 34 or c == 92:
            p[0] = b'\\'
            p[1] = <char>c
            p += 2
        elif c == 10:
            p[0] = b'\\'; p[1] = b'n'; p += 2
        elif c == 13:
            p[0] = b'\\'; p[1] = b'r'; p += 2
        elif c == 9:
            p[0] = b'\\'; p[1] = b't'; p += 2
        elif c == 8:
            p[0] = b'\\'; p[1] = b'b'; p += 2
        elif c == 12:
            p[0] = b'\\'; p[1] = b'f'; p += 2
        else:
            memcpy(p, b"\\u00", 4)
            p[4] = _HEXDIGITS[c >> 4]
            p[5] = _HEXDIGITS[c & 15]
            p += 6
    return p


cdef inline char *_literal(char *p, const char *s, Py_ssize_t n) noexcept nogil:
    memcpy(p, s, n)
    return p + n


cdef inline char *_integer(char *p, unsigned long long v) noexcept nogil:
    cdef char digits[24]
    cdef int k = 0
    while True:
        digits[k] = <char>(48 + v % 10)
        k += 1
        v //= 10
        if v == 0:
            break
    while k:
        k -= 1
        p[0] = digits[k]
        p += 1
    return p


cdef inline char *_millis(char *p, unsigned long long us) noexcept nogil:
    """Microseconds as milliseconds with three decimals: 12345 → 12.345."""
    cdef unsigned long long frac = us % 1000
    p = _integer(p, us // 1000)
    p[0] = b'.'
    p[1] = <char>(48 + frac // 100)
    p[2] = <char>(48 + frac // 10 % 10)
    p[3] = <char>(48 + frac % 10)
    return p + 4


# The line between its values: constant, one memcpy each.
cdef bytes _K_TIME = b'{"time":"'
cdef bytes _K_RID = b'","request_id":"'
cdef bytes _K_CLIENT = b'","client_ip":"'
cdef bytes _K_METHOD = b'","method":"'
cdef bytes _K_PATH = b'","path":"'
cdef bytes _K_STATUS = b'","status":'
cdef bytes _K_BYTES = b',"bytes":'
cdef bytes _K_REQUEST_BYTES = b',"request_bytes":'
cdef bytes _K_DURATION = b',"duration_ms":'
cdef bytes _K_UPSTREAM = b',"upstream":'
cdef bytes _K_UPSTREAM_MS = b',"upstream_ms":'
cdef bytes _K_ROUTE = b',"route":'
cdef bytes _K_GATEWAY = b',"gateway":'
cdef bytes _K_UA = b',"user_agent":"'
cdef bytes _K_TRACE = b'","trace_id":"'
cdef bytes _K_END = b'"}\n'
cdef Py_ssize_t _FIXED = (len(_K_TIME) + len(_K_RID) + len(_K_CLIENT) + len(_K_METHOD) + len(_K_PATH)
                          + len(_K_STATUS) + len(_K_BYTES) + len(_K_REQUEST_BYTES) + len(_K_DURATION)
                          + len(_K_UPSTREAM) + len(_K_UPSTREAM_MS) + len(_K_ROUTE) + len(_K_GATEWAY)
                          + len(_K_UA) + len(_K_TRACE) + len(_K_END)
                          + 5  # ".mmmZ"
                          + 6 * 24)  # six numbers, each at most 20 digits and ".mmm"


def append(bytearray batch, bytes stamp, int millis, bytes rid, bytes client, bytes method, bytes target,
           unsigned long long status, unsigned long long sent, unsigned long long received,
           unsigned long long duration_us, bytes upstream, unsigned long long upstream_us, bytes route,
           bytes gateway, bytes ua, bytes trace):
    """Append one line (ending in a newline) to ``batch``; ``stamp`` is the time to
    the second ("2026-12-07T20:00:00"), ``millis`` its milliseconds (0-999)."""
    cdef const unsigned char *s_rid = <const unsigned char *>rid
    cdef const unsigned char *s_client = <const unsigned char *>client
    cdef const unsigned char *s_method = <const unsigned char *>method
    cdef const unsigned char *s_target = <const unsigned char *>target
    cdef const unsigned char *s_ua = <const unsigned char *>ua
    cdef const unsigned char *s_trace = <const unsigned char *>trace
    cdef Py_ssize_t n_rid = len(rid), n_client = len(client), n_method = len(method)
    cdef Py_ssize_t n_target = len(target), n_ua = len(ua), n_trace = len(trace)
    if not 0 <= millis < 1000:
        raise ValueError("millis must be 0-999")
    cdef Py_ssize_t start = PyByteArray_GET_SIZE(batch)
    cdef Py_ssize_t need = (_FIXED + len(stamp) + len(upstream) + len(route) + len(gateway)
                            + _escaped_size(s_rid, n_rid) + _escaped_size(s_client, n_client)
                            + _escaped_size(s_method, n_method) + _escaped_size(s_target, n_target)
                            + _escaped_size(s_ua, n_ua) + _escaped_size(s_trace, n_trace))
    PyByteArray_Resize(batch, start + need)
    cdef char *base = PyByteArray_AS_STRING(batch)
    cdef char *p = base + start
    p = _literal(p, _K_TIME, len(_K_TIME))
    p = _literal(p, stamp, len(stamp))
    p[0] = b'.'
    p[1] = <char>(48 + millis // 100)
    p[2] = <char>(48 + millis // 10 % 10)
    p[3] = <char>(48 + millis % 10)
    p[4] = b'Z'
    p += 5
    p = _literal(p, _K_RID, len(_K_RID))
    p = _escape(p, s_rid, n_rid)
    p = _literal(p, _K_CLIENT, len(_K_CLIENT))
    p = _escape(p, s_client, n_client)
    p = _literal(p, _K_METHOD, len(_K_METHOD))
    p = _escape(p, s_method, n_method)
    p = _literal(p, _K_PATH, len(_K_PATH))
    p = _escape(p, s_target, n_target)
    p = _literal(p, _K_STATUS, len(_K_STATUS))
    p = _integer(p, status)
    p = _literal(p, _K_BYTES, len(_K_BYTES))
    p = _integer(p, sent)
    p = _literal(p, _K_REQUEST_BYTES, len(_K_REQUEST_BYTES))
    p = _integer(p, received)
    p = _literal(p, _K_DURATION, len(_K_DURATION))
    p = _millis(p, duration_us)
    p = _literal(p, _K_UPSTREAM, len(_K_UPSTREAM))
    p = _literal(p, upstream, len(upstream))
    p = _literal(p, _K_UPSTREAM_MS, len(_K_UPSTREAM_MS))
    p = _millis(p, upstream_us)
    p = _literal(p, _K_ROUTE, len(_K_ROUTE))
    p = _literal(p, route, len(route))
    p = _literal(p, _K_GATEWAY, len(_K_GATEWAY))
    p = _literal(p, gateway, len(gateway))
    p = _literal(p, _K_UA, len(_K_UA))
    p = _escape(p, s_ua, n_ua)
    p = _literal(p, _K_TRACE, len(_K_TRACE))
    p = _escape(p, s_trace, n_trace)
    p = _literal(p, _K_END, len(_K_END))
    # Down to what was written (within the allocation: no copy).
    PyByteArray_Resize(batch, p - base)
