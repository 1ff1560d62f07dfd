# Compiled layout of tracing.py (Cython augmenting declarations).
cimport cython

cdef Py_ssize_t _STRIDE, _AT, _TRACE_AT, _SPAN_AT
cdef bytes _HEX

@cython.locals(n=Py_ssize_t)
cpdef bint valid(bytes value)

cdef class Tracer:
    cdef public object batch, _loop, _meter, _send
    cdef public bytes _bound, _pool
    cdef public Py_ssize_t _next, _end
    cdef public int worker
    @cython.locals(o=Py_ssize_t, pool=bytes, c=int)
    cpdef bytes start(self, bytes parent)
    cpdef _refill(self)
    @cython.locals(path=bytes, ua=bytes, state=bytes)
    cpdef finish(self, ex, double seconds)
    cpdef flush(self)
