"""The HTTP side: URL → (resource, namespace, name, subresource) → one store verb.

Rules:
* HTTP/1.1 with keep-alive, one thread per connection, TCP_NODELAY as Go sets it;
* every response is JSON (or ``ok`` text for health checks), every failure an
  ``APIError`` answered as its ``Status``; nothing escapes as a bare 500 page;
* the URL layout is the real server's: ``/api/v1/...`` and
  ``/apis/<group>/<version>/...``, ``namespaces/<ns>/<plural>[/<name>[/status]]``
  for namespaced kinds, ``<plural>[/<name>[/status]]`` for cluster-scoped ones and
  for all-namespaces lists and watches, the old ``/watch/`` prefix too;
* ``/_kubeapi/*`` mirrors the test helpers of ``KubeAPIServer`` for the
  subprocess mode; nothing else is served that a real server would not serve.
"""

from __future__ import annotations

import copy
import json
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from . import discovery
from .errors import (APIError, bad_request, method_not_allowed, no_route,
                     unsupported_media_type)
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .selectors import FieldSelector, LabelSelector, SelectorError
from .store import check_body
from .watch import ERROR, Watcher, encode, with_version

JSON = "application/json"
_PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
_CR_PATCH_TYPES = [t for t in _PATCH_TYPES if "strategic" not in t]
_TRUE = ("true", "1")


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # A gateway opens a dozen watches at once; socketserver's default backlog
    # of 5 would make some wait for a SYN retry (a second).
    request_queue_size = 128

    def __init__(self, address, handler, api):
        """``api`` is the KubeAPIServer whose registry and store the handlers use."""
        self.api = api
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        # A connection that the client or close_connections() cut is how
        # watches end, not a server fault: only a real bug gets a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        # Go's net/http sets TCP_NODELAY; without it a head and a body in two
        # writes wait out the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        return "kubeapi"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing ----------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            parts = [unquote(p) for p in url.path.split("/") if p]
            self._route(method, parts, query, body)
        except APIError as e:
            self._send(e.code, e.status(), retry_after=e.retry_after)
        except OSError:  # the client went away mid-answer
            self.close_connection = True
        except Exception:  # a bug here must not look like a hung server
            self._send(500, APIError(500, "InternalError", "Internal error occurred: "
                                     + traceback.format_exc(limit=3)).status())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, obj, retry_after: int | None = None) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", JSON)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _decode(self, body: bytes, content_type: str | None = None):
        content_type = (content_type or self.headers.get("Content-Type") or JSON)
        content_type = content_type.split(";")[0].strip().lower()
        if not body.strip():
            raise bad_request("the body of the request was empty")
        if "protobuf" in content_type:
            raise unsupported_media_type(content_type, [JSON, "application/yaml"])
        try:
            if "yaml" in content_type:
                return yaml.safe_load(body)
            return json.loads(body)
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"the body of the request could not be decoded: {e}")

    # -- routing -----------------------------------------------------------------------------

    def _route(self, method: str, parts: list[str], query: dict, body: bytes) -> None:
        api = self.server.api
        registry = api.registry
        if parts and parts[0] == "_kubeapi":
            return self._admin(method, parts[1:], query, body)
        if parts in ([], ["version"], ["healthz"], ["livez"], ["readyz"], ["api"], ["apis"]) \
                and method != "GET":
            raise method_not_allowed()
        if not parts:
            return self._send(200, {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez",
                                              "/readyz", "/version"]})
        if parts == ["version"]:
            return self._send(200, discovery.VERSION)
        if parts[0] in ("healthz", "livez", "readyz") and len(parts) == 1:
            return self._send_text(200, "ok")
        if parts[0] == "api":
            if len(parts) == 1:
                return self._send(200, discovery.api_versions(f"127.0.0.1:{api.port}"))
            if parts[1] != "v1":
                raise no_route()
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis":
            if len(parts) <= 2 and method != "GET":
                raise method_not_allowed()
            with api.store.cond:
                if len(parts) == 1:
                    return self._send(200, discovery.group_list(registry))
                if len(parts) == 2:
                    doc = discovery.group(registry, parts[1])
                    if doc is None:
                        raise no_route()
                    return self._send(200, doc)
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise no_route()
        if not rest:
            if method != "GET":
                raise method_not_allowed()
            with api.store.cond:
                doc = discovery.resource_list(registry, group, version)
            if doc is None:
                raise no_route()
            return self._send(200, doc)
        self._resource_request(method, group, version, rest, query, body)

    def _resource_request(self, method, group, version, rest, query, body) -> None:
        registry = self.server.api.registry
        watch = query.get("watch", "").lower() in _TRUE
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
            if not rest:
                raise no_route()
        resource = registry.lookup(group, version, rest[2]) if (
            len(rest) >= 3 and rest[0] == "namespaces") else None
        if resource is not None and resource.namespaced:
            ns, tail = rest[1], rest[3:]
        else:
            resource = registry.lookup(group, version, rest[0])
            if resource is None:
                raise no_route()
            ns, tail = None, rest[1:]
            if resource.namespaced and tail:
                raise no_route()
        if len(tail) > 2 or (len(tail) == 2 and (tail[1] != "status" or not resource.status)):
            raise no_route()
        name = tail[0] if tail else None
        sub = tail[1] if len(tail) == 2 else None
        dry_run = self._dry_run(query)
        if method == "GET":
            if watch:
                if name is not None:
                    query = dict(query, fieldSelector=",".join(
                        filter(None, [f"metadata.name={name}", query.get("fieldSelector")])))
                return self._watch(resource, version, ns, query)
            if name is None:
                return self._list(resource, version, ns, query)
            return self._send(200, self._out(self.server.api.store.get(resource, ns, name),
                                             resource, version))
        if method == "POST":
            if name is not None or (resource.namespaced and ns is None):
                raise method_not_allowed()
            obj = self._decode(body)
            check_body(resource, version, obj)
            created = self.server.api.store.create(resource, ns, obj, dry_run)
            return self._send(201, self._out(created, resource, version))
        if method == "PUT":
            if name is None:
                raise method_not_allowed()
            obj = self._decode(body)
            check_body(resource, version, obj)
            out, created = self.server.api.store.update(resource, ns, name, obj, sub, dry_run)
            return self._send(201 if created else 200, self._out(out, resource, version))
        if method == "PATCH":
            if name is None:
                raise method_not_allowed()
            return self._patch(resource, version, ns, name, sub, query, body, dry_run)
        if method == "DELETE":
            if sub is not None:
                raise method_not_allowed()
            options = self._decode(body) if body.strip() else {}
            if not isinstance(options, dict):
                raise bad_request("DeleteOptions must be an object")
            if name is None:
                if "deletecollection" not in resource.verbs or (resource.namespaced and ns is None):
                    raise method_not_allowed()
                return self._delete_collection(resource, version, ns, query, options, dry_run)
            return self._delete(resource, version, ns, name, options, dry_run)
        raise method_not_allowed()

    @staticmethod
    def _dry_run(query: dict) -> bool:
        value = query.get("dryRun")
        if value in (None, ""):
            return False
        if value != "All":
            raise bad_request(f'Invalid dry run value: "{value}": supported values: "All"')
        return True

    @staticmethod
    def _out(obj: dict, resource, version: str) -> dict:
        return with_version(obj, resource.api_version(version))

    # -- verbs -------------------------------------------------------------------------------

    def _selectors(self, resource, query: dict) -> tuple[LabelSelector, FieldSelector]:
        try:
            labels = LabelSelector(query.get("labelSelector"))
            fields = FieldSelector(query.get("fieldSelector"))
        except SelectorError as e:
            raise bad_request(str(e))
        if self.server.api.strict_field_selectors:
            allowed = {"metadata.name", "metadata.namespace", *resource.selectable_fields}
            for field in fields.fields:
                if field not in allowed:
                    raise bad_request(f'field label not supported: {field}')
        return labels, fields

    @staticmethod
    def _int(query: dict, key: str) -> int | None:
        value = query.get(key)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            raise bad_request(f'{key}: Invalid value: "{value}": must be an integer')

    def _list(self, resource, version, ns, query) -> None:
        labels, fields = self._selectors(resource, query)
        rv = self._int(query, "resourceVersion")
        token = query.get("continue") or None
        if token and query.get("resourceVersion") not in (None, "", "0"):
            raise bad_request("specifying resource version is not allowed when using continue")
        items, list_rv, token, remaining = self.server.api.store.list(
            resource, ns, labels, fields, rv, query.get("resourceVersionMatch"),
            self._int(query, "limit"), token)
        api_version = resource.api_version(version)
        if resource.custom:
            items = [with_version(o, api_version) for o in items]
        else:  # typed lists carry no kind/apiVersion on their items
            items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        meta: dict = {"resourceVersion": str(list_rv)}
        if token:
            meta["continue"] = token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        self._send(200, {"kind": resource.list_kind, "apiVersion": api_version,
                         "metadata": meta, "items": items})

    def _watch(self, resource, version, ns, query) -> None:
        api = self.server.api
        labels, fields = self._selectors(resource, query)
        raw_rv = query.get("resourceVersion")
        rv = self._int(query, "resourceVersion")
        initial = query.get("sendInitialEvents")
        if initial is not None and initial.lower() in _TRUE:
            if query.get("resourceVersionMatch") != "NotOlderThan":
                raise APIError(422, "Invalid", "ListOptions.meta.k8s.io \"\" is invalid: "
                               "resourceVersionMatch: Forbidden: sendInitialEvents requires "
                               "setting resourceVersionMatch to NotOlderThan")
            send_initial = True
        elif initial is not None:
            send_initial = False
        else:
            send_initial = raw_rv in (None, "", "0")
        timeout = self._int(query, "timeoutSeconds") or api.watch_timeout
        watcher = Watcher(resource, version, ns, labels, fields,
                          query.get("allowWatchBookmarks", "").lower() in _TRUE, self.connection)
        try:
            api.store.watch(watcher, rv, send_initial, mark_initial_end=initial is not None
                            and initial.lower() in _TRUE)
        except APIError as e:
            if e.code != 410:
                raise
            self._start_stream()
            self._chunk(encode(ERROR, e.status()))
            self._chunk(b"")
            return
        try:
            self._start_stream()
            clean = watcher.run(self._chunk, api.store, timeout, api.bookmark_interval)
            if clean:
                self._chunk(b"")
            else:
                self.close_connection = True
        except Exception:  # after the head is sent, only closing can report it
            self.close_connection = True
        finally:
            api.store.unwatch(watcher)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", JSON)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def _patch(self, resource, version, ns, name, sub, query, body, dry_run) -> None:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        accepted = _PATCH_TYPES if resource.strategic_merge else _CR_PATCH_TYPES
        if content_type not in accepted:
            raise unsupported_media_type(content_type, accepted)
        doc = self._decode(body, "application/yaml" if "yaml" in content_type else JSON)
        create_missing = False
        if content_type == "application/json-patch+json":
            if not isinstance(doc, list):
                raise bad_request("the body of a json patch must be a list of operations")

            def apply(cur):
                try:
                    return json_patch(cur, doc)
                except PatchError as e:
                    raise APIError(422, "Invalid", str(e))
                except ValueError as e:
                    raise bad_request(str(e))
        elif content_type == "application/apply-patch+yaml":
            if not query.get("fieldManager"):
                raise bad_request("PATCH " + self.path.split("?")[0]
                                  + ": fieldManager is required for apply requests")
            if not isinstance(doc, dict):
                raise bad_request("the body of an apply patch must be an object")
            create_missing = sub is None

            def apply(cur):
                return merge_patch(cur, doc) if cur else copy.deepcopy(doc)
        else:
            if not isinstance(doc, dict):
                raise bad_request("the body of a merge patch must be an object")
            merge = strategic_merge_patch if "strategic" in content_type else merge_patch

            def apply(cur):
                return merge(cur, doc)
        out, created = self.server.api.store.patch(resource, version, ns, name, apply, sub,
                                                   dry_run, create_missing)
        self._send(201 if created else 200, self._out(out, resource, version))

    def _delete(self, resource, version, ns, name, options, dry_run) -> None:
        obj, deleted = self.server.api.store.delete(resource, ns, name, options, dry_run)
        if deleted and not resource.return_deleted:
            details = {"name": name}
            if resource.group:
                details["group"] = resource.group
            details.update(kind=resource.plural, uid=obj["metadata"]["uid"])
            return self._send(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Success", "details": details})
        self._send(200, self._out(obj, resource, version))

    def _delete_collection(self, resource, version, ns, query, options, dry_run) -> None:
        labels, fields = self._selectors(resource, query)
        store = self.server.api.store
        items = store.delete_collection(resource, ns, labels, fields, options, dry_run)
        api_version = resource.api_version(version)
        self._send(200, {"kind": resource.list_kind, "apiVersion": api_version,
                         "metadata": {"resourceVersion": str(store.resource_version)},
                         "items": [with_version(o, api_version) for o in items]})

    # -- /_kubeapi: the test helpers, over HTTP for the subprocess mode ----------------------

    def _admin(self, method: str, parts: list[str], query: dict, body: bytes) -> None:
        api = self.server.api
        if parts == ["watches"] and method == "GET":
            return self._send(200, {"count": api.watch_count})
        if method != "POST":
            raise method_not_allowed()
        if parts == ["compact"]:
            return self._send(200, {"resourceVersion": api.compact()})
        if parts == ["drop-watches"]:
            graceful = query.get("graceful", "").lower() in _TRUE
            return self._send(200, {"dropped": api.drop_watches(graceful)})
        if parts == ["apply"]:
            doc = self._decode(body)
            docs = doc.get("items", []) if doc.get("kind") == "List" else [doc]
            try:
                return self._send(200, {"items": [api.apply(d) for d in docs]})
            except KeyError as e:
                raise not_found_kind(str(e))
        raise no_route()


def not_found_kind(message: str) -> APIError:
    return APIError(404, "NotFound", message.strip("'\""), {})
