# Compiled layout of accesslog.py (Cython augmenting declarations).
cimport cython
from dataplane.exchange cimport Exchange
from dataplane.request cimport Request

cdef class AccessLog:
    cdef public object fd, query, _loop, _queue, _thread, _lock, _meter
    cdef public dict _routes, _upstreams, _gateways
    cdef public bytes _stamp
    cdef public bytearray batch
    cdef public double sample
    cdef public Py_ssize_t pending, lines
    cdef public long long _second
    # Typed: the exchange's and request's fields are read as C struct members,
    # and passed to dataplane/_logline.pyx as bytes without a check.
    @cython.locals(req=Request, t=double, second="long long", target=bytes, method=bytes, client=bytes,
                   ua=bytes, trace=bytes, rid=bytes, upstream=bytes, route=bytes, gateway=bytes, millis=int,
                   duration_us="long long", upstream_us="long long")
    cpdef record(self, Exchange ex, int status, double seconds)
    cpdef flush(self)
