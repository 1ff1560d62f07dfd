# Compiled layout of protocol.py (Cython augmenting declarations).
from dataplane.downstream cimport Downstream
from dataplane.request cimport HeadReader
from dataplane.dispatch cimport Dispatcher

cdef class HttpProtocol(Downstream):
    cdef public object listener, scheme, parser, url, headers
    cdef public HeadReader reader
    cdef public Dispatcher dispatcher
    cdef public bint _overloaded, _first, _between
    cdef public Py_ssize_t _head_seen, _chunk_len, _body_seen
    cdef public double _request_deadline
    cdef public long long _completed, _seen_gen
    cdef public object _seen, _seen_req, _candidate
