# Compiled layout of flow.py (Cython augmenting declarations).
cdef class FlowControl:
    cdef public object transport
    cdef public int blocked
    cdef public bint closed
    cpdef block(self, int reason)
    cpdef unblock(self, int reason)
