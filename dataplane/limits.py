"""The worker settings the data path reads per request, read once into plain fields.

WorkerSettings (shm/schema.py) is what the supervisor hands a worker; the
protocol, the head reader and the exchange read a dozen of its numbers for
every request. A ``Limits`` holds them (built once per connection), and
compiled (limits.pxd) they are C fields: a per-request check is a compare,
not an attribute lookup on the settings object.
"""

from __future__ import annotations


class Limits:
    __slots__ = (
        "header_timeout", "body_timeout", "request_timeout", "keepalive_timeout",
        "upstream_response_timeout", "max_request_line_bytes", "max_header_bytes",
        "max_header_count", "max_body_bytes", "max_pipeline", "max_connections_per_worker",
        "underscore_headers", "escaped_slashes", "merge_slashes",
    )

    def __init__(self, settings) -> None:
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        self.request_timeout = settings.request_timeout
        self.keepalive_timeout = settings.keepalive_timeout
        self.upstream_response_timeout = settings.upstream_response_timeout
        self.max_request_line_bytes = settings.max_request_line_bytes
        self.max_header_bytes = settings.max_header_bytes
        self.max_header_count = settings.max_header_count
        self.max_body_bytes = settings.max_body_bytes
        self.max_pipeline = settings.max_pipeline
        self.max_connections_per_worker = settings.max_connections_per_worker
        self.underscore_headers = settings.underscore_headers
        self.escaped_slashes = settings.escaped_slashes
        self.merge_slashes = settings.merge_slashes
