# Compiled layout of dispatch.py (Cython augmenting declarations).
from dataplane.request cimport HeadReader, Request

cdef class Dispatcher:
    cdef public object worker, _host, _vhost
    cdef public HeadReader reader
    cdef public long long _generation
    cdef public bint plain
    cpdef exchange(self, proto, Request req)
    cpdef _exchange(self, proto, Request req, cand)
