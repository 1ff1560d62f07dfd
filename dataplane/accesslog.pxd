# Compiled layout of accesslog.py (Cython augmenting declarations).
cdef class AccessLog:
    cdef public object fd, query, batch, _loop, _queue, _thread, _lock, _stamp, _meter, _routes, _upstreams
    cdef public double sample
    cdef public Py_ssize_t pending
    cdef public long long _second
    cpdef record(self, ex, int status, double seconds)
    cpdef flush(self)
