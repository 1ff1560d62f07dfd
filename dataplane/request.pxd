# Compiled layout of request.py (Cython augmenting declarations).
from dataplane.limits cimport Limits
from dataplane.tracing cimport Tracer

cdef class Request:
    cdef public object method, target, path, query, host, headers, forward, length, xff
    cdef public object client, scheme, prefix, host_out, mirrors, answer, request_id, user_agent, traceparent
    cdef public object trace_in, tracestate
    cdef public bint chunked, http10, keep_alive, keep_local, head_only, expect_continue, upgrade, has_body, rid_new
    cdef public bint sampled
    cdef public int port

cdef class HeadReader:
    cdef public Limits limits
    cdef public object client, scheme, _normal_last, _host_ok, _fwd_host, _fwd
    cdef public Tracer tracer
    cdef public int port
    cpdef Request read(self, parser, url, headers, Py_ssize_t head_seen, bint closing)
    cpdef host_key(self, Request req)
    cpdef bytes upstream_head(self, Request req, host_rewrite)
    cpdef Request repeat(self, Request req)
