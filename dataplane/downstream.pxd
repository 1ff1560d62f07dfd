# Compiled layout of downstream.py (Cython augmenting declarations).
from dataplane.deadline cimport Deadline
from dataplane.flow cimport FlowControl
from dataplane.outbox cimport Outbox
from dataplane.limits cimport Limits
from dataplane.upstream.pool cimport Pool
from dataplane.metrics cimport Meter

cdef class Downstream:
    cdef public object worker, loop, settings, transport, active, queue, current, tunnel, _early, access_log
    cdef public Meter meter
    cdef public double request_started, request_t0
    cdef public Outbox outbox
    cdef public Limits limits
    cdef public Pool pool
    cdef public FlowControl flow
    cdef public Deadline deadline
    cdef public bint _closed, _refused, _in_head
    cdef public int _waiting
    cpdef write(self, data)
    cpdef abort(self)
    cpdef bint closing_after_response(self)
    cpdef exchange_done(self, ex)
    cpdef wait_for(self, int what, double when)
    cpdef enqueue(self, ex)
    cpdef _close(self)
