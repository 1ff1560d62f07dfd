# Compiled layout of exchange.py (Cython augmenting declarations).
from dataplane.downstream cimport Downstream

cdef tuple _ALLOWED

cdef class Exchange:
    cdef public Downstream proto
    cdef public object req, local, head, cluster, endpoint, action, responses, retry, conn, body, kept, mirrors
    cdef public int state, attempts, retries
    cdef public bint req_done, keep_alive, http10, head_only, chunked, replayable, upgrade, expect_continue
    cdef public Py_ssize_t body_bytes, kept_bytes, req_bytes, resp_bytes
    cdef public double t0, sent_at, upstream_s
    cdef public int status
    cdef public object source, gateway, rid
    cpdef _ended(self)
    cpdef _move(self, int new)
    cpdef start(self)
    cpdef _attach(self, conn)
    cpdef body_chunk(self, chunk)
    cpdef request_finished(self)
    cpdef relay(self, data)
    cpdef response_head(self, block, int status)
    cpdef bytes connection_header(self)
    cpdef response_done(self, conn, bint reusable)
    cpdef _response_finished(self)
    cpdef _clear_deadlines(self)
