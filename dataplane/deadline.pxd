# Compiled layout of deadline.py (Cython augmenting declarations; the .py stays the source).
cdef class Deadline:
    cdef public object loop, owner
    cdef public list due
    cdef object _handle
    cdef public double _armed
    cpdef set(self, int kind, double when)
    cpdef after(self, int kind, double seconds)
    cpdef clear(self, int kind)
    cpdef clear_exchange(self)
    cpdef close(self)
    cpdef _arm(self, double when)
