# Compiled layout of upstream/connection.py (Cython augmenting declarations).
from dataplane.outbox cimport Outbox

cdef class UpstreamConnection:
    cdef public object pool, key, transport, parser, exchange, _head, _pending_ex
    cdef public object _seen_head, _seen_line, _seen_block, _candidate
    cdef public Py_ssize_t _seen_total, _body_len
    cdef public int _seen_status
    cdef public bint _seen_reuse
    cdef public Outbox outbox
    cdef public list _out
    cdef public bint closed, _chunked, _until_close, _interim, _switching, tunnel, _pending_reuse
    cdef public long long uses
    cdef public double idle_since
    cpdef attach(self, exchange, data)
    cpdef write(self, data)
    cpdef close(self)
    cpdef _finish(self, bint reusable)
    cpdef bint _repeated(self, data)
