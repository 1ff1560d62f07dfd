"""The request explainer behind ``/debug/route``: which route, rule and backend
a request would take on the live table, and why.

It runs the same matcher the workers run (``common.match``), over the bytes of
the generation the workers serve, so its answer is theirs. Query parameters:

  host=…      the Host header (required)
  path=…      the request target, query string included (default "/")
  method=…    (default GET)
  port=…      which listener port (default: every listener)
  anything else is a request header: ``x-env=canary`` sends ``x-env: canary``.
"""

from __future__ import annotations

from typing import Any

from shm import codec
from common.match import HostIndex, PathIndex, explain
from common.path import UNESCAPE_REDIRECT, PathError
from common.path import normalize as normalize_path
from shm.schema import RequestRedirect, Table

_RESERVED = {"host", "path", "method", "port"}


class ExplainError(ValueError):
    """The question is malformed (400), not the answer."""


def explain_request(table: Table, params: dict[str, list[str]], escaped_slashes: str = UNESCAPE_REDIRECT,
                    merge_slashes: bool = True) -> dict[str, Any]:
    host = _one(params, "host")
    if not host:
        raise ExplainError("host is required, e.g. /debug/route?host=example.com&path=/api")
    target = _one(params, "path") or "/"
    if not target.startswith("/"):
        raise ExplainError("path must start with '/'")
    method = (_one(params, "method") or "GET").upper()
    port = _one(params, "port")
    if port is not None and not port.isdigit():
        raise ExplainError("port must be a number")
    path, _, query = target.partition("?")
    try:  # what a worker does first: the route sees the normalised path
        path = normalize_path(path.encode(), escaped_slashes, merge_slashes)[0].decode()
    except PathError as exc:
        raise ExplainError(f"path: a worker answers 400: {exc}") from None
    headers = [(k.encode(), v.encode()) for k, vs in params.items() if k not in _RESERVED for v in vs]
    hostkey = host.lower().encode()
    if not hostkey.endswith(b"]") and b":" in hostkey:
        hostkey = hostkey.rsplit(b":", 1)[0]
    listeners = [lst for lst in table.listeners if port is None or lst.port == int(port)]
    return {
        "generation": table.generation,
        "request": {"host": host, "path": path, "query": query, "method": method,
                    "headers": {k.decode(): v.decode() for k, v in headers}},
        "listeners": [
            _on_listener(table, lst, hostkey, method.encode(), path.encode(), headers, query.encode())
            for lst in listeners
        ] or [{"answer": "no listener on that port"}],
    }


def _on_listener(table: Table, lst, host: bytes, method: bytes, path: bytes, headers, query: bytes) -> dict:
    out: dict[str, Any] = {"listener": lst.name}
    index, why = HostIndex(lst).explain(host)
    out["host"] = why
    if index < 0:
        out["answer"] = "404: " + why
        return out
    vhost = codec.decode_vhost(table.vhosts[index].blob)
    out["virtual_host"] = vhost.name
    winner, passed_over = explain(PathIndex(vhost, lambda e: e), method, path, headers, query)
    out["passed_over"] = [{"route": c.source, "why": why} for c, why in passed_over]
    if winner is None:
        out["answer"] = "404: no route entry of this host matches the path and conditions"
        return out
    action = vhost.actions[winner.entry.action]
    out["route"] = {"rule": winner.source, "match": codec.named(winner.entry.match),
                    "why": "the highest-precedence entry whose path and conditions hold"}
    out["filters"] = [codec.named(f) for f in action.filters]
    if any(isinstance(f, RequestRedirect) for f in action.filters):
        out["answer"] = "redirect (RequestRedirect filter)"
        return out
    clusters = {r.name: r for r in table.clusters}
    total = sum(b.weight for b in action.backends if b.weight > 0)
    backends = []
    for b in action.backends:
        share = b.weight / total if total and b.weight > 0 else 0.0
        item: dict[str, Any] = {"backend": b.cluster or "(unresolved)", "weight": b.weight, "share": round(share, 4)}
        ref = clusters.get(b.cluster)
        if not b.cluster or ref is None:
            item["answer"] = "500: the backendRef could not be resolved"
        else:
            cluster = codec.decode_cluster(ref.blob)
            item["endpoints"] = [f"{e.address}:{e.port}" for e in cluster.endpoints]
            item["answer"] = "proxied" if cluster.endpoints else "503: no ready endpoint"
        backends.append(item)
    out["backends"] = backends
    out["answer"] = "proxied to a backend by weight" if total else "500: no backend with weight above 0"
    return out


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None
