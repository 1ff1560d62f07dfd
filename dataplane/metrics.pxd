# Compiled layout of metrics.py (Cython augmenting declarations).
cdef class Meter:
    cdef public object region, _records, _keys
    cdef public unsigned long long[::1] words
    cdef public Py_ssize_t _conn
    cpdef Py_ssize_t _record(self, int kind, tuple labels)
    cpdef Py_ssize_t _key(self, tuple key, int kind, tuple labels)
    cpdef request(self, gateway, source, bytes method, int status, double seconds, Py_ssize_t req_bytes,
                  Py_ssize_t resp_bytes)
    cpdef upstream(self, source, backend, double seconds)
    cpdef retry(self, source, backend)
    cpdef upstream_error(self, source, backend, reason)
    cpdef Py_ssize_t _upstream(self, source, backend)
    cpdef opened(self)
    cpdef closed(self)
    cpdef received(self, Py_ssize_t n)
    cpdef sent(self, Py_ssize_t n)
    cpdef access_log_dropped(self, Py_ssize_t n)
    cpdef spans_dropped(self, Py_ssize_t n)
