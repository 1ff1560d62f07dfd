# Compiled layout of upstream/pool.py (Cython augmenting declarations).
cdef class Pool:
    cdef dict _idle
    cdef public int max_idle
    cdef public double idle_timeout, now
    cdef public long long opened, reused
    cpdef acquire(self, key)
    cpdef release(self, conn)
