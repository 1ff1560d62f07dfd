# Compiled layout of limits.py (Cython augmenting declarations).
cdef class Limits:
    cdef public double header_timeout, body_timeout, request_timeout, keepalive_timeout
    cdef public double upstream_response_timeout
    cdef public long long max_request_line_bytes, max_header_bytes, max_header_count, max_body_bytes
    cdef public long long max_pipeline, max_connections_per_worker
    cdef public object underscore_headers, escaped_slashes
    cdef public bint merge_slashes
