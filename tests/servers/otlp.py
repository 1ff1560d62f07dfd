"""An OTLP/HTTP trace receiver for tests: a real collector endpoint on 127.0.0.1.

It answers ``POST /v1/traces`` as the OpenTelemetry collector does: the body
is an ``ExportTraceServiceRequest`` (protobuf, optionally gzip), decoded with
opentelemetry-proto (which comes with the exporter), and the answer is an
``ExportTraceServiceResponse``. Every span received is kept as a plain dict
(``spans()``; ids in lower-case hex, attributes as Python values).

Misbehaving on purpose, for the dead-collector tests: ``status=503`` answers
that status to every export; ``hang=True`` accepts the connection, reads the
request and never answers (until ``stop``).

In-process, on a free port::

    with OTLPReceiver() as otlp:          # or OTLPReceiver().start() ... .stop()
        endpoint = otlp.url               # http://127.0.0.1:PORT (the gateway adds /v1/traces)

As a process: ``python -m tests.servers.otlp --port 0`` prints ``listening PORT``
and then one JSON line per span received.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _value(v):
    """An OTLP AnyValue → a Python value."""
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def _attributes(kvs) -> dict:
    return {kv.key: _value(kv.value) for kv in kvs}


def decode(body: bytes) -> list[dict]:
    """Every span of one ExportTraceServiceRequest, with its resource and scope."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        resource = _attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append({
                    "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(), "trace_state": s.trace_state,
                    "name": s.name, "kind": _KINDS.get(s.kind, str(s.kind)),
                    "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                    "attributes": _attributes(s.attributes),
                    "status": _STATUS.get(s.status.code, str(s.status.code)),
                    "resource": resource, "scope": ss.scope.name,
                })
    return out


class OTLPReceiver:
    def __init__(self, *, port: int = 0, status: int = 200, hang: bool = False, on_span=None) -> None:
        self._port = port  # 0: a free one
        self.status = status
        self.hang = hang
        self.on_span = on_span  # called with each span dict (the process mode prints them)
        self.exports = 0  # POSTs received (answered or not)
        self._spans: list[dict] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[dict]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict]:
        """At least ``n`` spans, once they have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.spans()
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"the collector got {len(self.spans())} spans, not {n}, in {timeout}s")

    def start(self) -> "OTLPReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.exports += 1
                if receiver.hang:
                    receiver._stopping.wait()  # never answer; the client gives up first
                    self.close_connection = True
                    return
                if self.path != "/v1/traces":
                    return self._answer(404, b"", "text/plain")
                if receiver.status != 200:
                    return self._answer(receiver.status, b"unavailable", "text/plain")
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                try:
                    spans = decode(body)
                except Exception as exc:  # a body that is not an ExportTraceServiceRequest
                    return self._answer(400, str(exc).encode(), "text/plain")
                with receiver._lock:
                    receiver._spans.extend(spans)
                if receiver.on_span is not None:
                    for span in spans:
                        receiver.on_span(span)
                self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

            def _answer(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # a hanging handler returns
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def __enter__(self) -> "OTLPReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.servers.otlp")
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    ap.add_argument("--status", type=int, default=200, help="answer every export with this status")
    ap.add_argument("--hang", action="store_true", help="never answer an export")
    args = ap.parse_args(argv)

    def show(span: dict) -> None:
        print(json.dumps(span), flush=True)

    receiver = OTLPReceiver(port=args.port, status=args.status, hang=args.hang, on_span=show).start()
    print(f"listening {receiver.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
