# Compiled layout of tracing.py (Cython augmenting declarations).
cimport cython

cdef Py_ssize_t _STRIDE, _AT, _TRACE_AT, _SPAN_AT
cdef bytes _HEX

@cython.locals(n=Py_ssize_t)
cpdef bint valid(bytes value)

cdef class Tracer:
    cdef public object batch, _loop, _meter, _exporter, _queue, _thread, _lock
    cdef public bytes _bound, _pool
    cdef public Py_ssize_t pending, queue_size, _next, _end, _failed_quietly
    cdef public double _quiet_until
    @cython.locals(o=Py_ssize_t, pool=bytes, c=int)
    cpdef bytes start(self, bytes parent)
    cpdef _refill(self)
    cpdef finish(self, ex, double seconds)
    cpdef flush(self)
