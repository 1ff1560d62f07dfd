# Compiled layout of outbox.py (Cython augmenting declarations).
cdef class Outbox:
    cdef object _loop
    cdef list _items
    cdef public long long flushes
    cpdef write(self, transport, data)
    cpdef close(self, transport)
