"""HTTPRoute filters: validated as the Gateway API specifies, then kept as IR.

A filter is either understood completely or its rule is dropped with a reason
(the spec's option for filters an implementation cannot honour: never serve a
rule without its redirect or header change). The IR keeps each filter as a
``Filter(type, config)`` whose config has exactly the shape of the Gateway API
object (camelCase keys), so other sources (Ingress annotations, FluxGateRoute)
produce the same shapes and compile() reads one format.

Supported: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect,
URLRewrite, RequestMirror (its config gains the resolved ``cluster``; "" when
the backend cannot be resolved, which disables the mirror, not the rule),
CORS. An ExtensionRef is validated and kept as written: FluxGate has no
custom filter kinds yet, so httproute answers its rule's requests with 500
(the spec: never skip a filter that cannot be resolved) and reports the
reference in ResolvedRefs. On a backendRef only the header modifiers are
supported; other filters there drop the rule ("not supported yet").
"""

from __future__ import annotations

import re
from typing import Any, Callable

from control import ir
from control.objects import resources as r

SUPPORTED = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite",
             "RequestMirror", "CORS", "ExtensionRef")
# On a backendRef (extended support): header modifiers only, for now.
BACKEND_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier")
# Resolves a mirror's backendRef to a cluster name ("" when it cannot be).
Resolve = Callable[[r.HTTPBackendRef], str]
_MEMBER = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestRedirect": "request_redirect",
    "URLRewrite": "url_rewrite",
    "RequestMirror": "request_mirror",
    "CORS": "cors",
    "ExtensionRef": "extension_ref",
}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_HEADERS = 16
REDIRECT_CODES = (301, 302, 303, 307, 308)


class FilterError(ValueError):
    """Why a filter cannot be served; becomes the reason its rule is dropped."""


def convert(filters: tuple[r.HTTPRouteFilter, ...], matches: tuple[ir.RouteMatch, ...],
            resolve: Resolve | None = None) -> tuple[ir.Filter, ...]:
    """The rule's filters as IR, or FilterError naming the first problem."""
    out: list[ir.Filter] = []
    seen: set[str] = set()
    for i, f in enumerate(filters):
        where = f"filters[{i}]"
        if f.type not in _MEMBER:
            raise FilterError(f"{where}: unknown filter type {f.type!r}")
        if f.type not in SUPPORTED:
            raise FilterError(f"{where}: {f.type} filters are not supported yet")
        if f.type in seen and f.type not in ("RequestMirror", "ExtensionRef"):  # these may repeat
            raise FilterError(f"{where}: {f.type} may appear only once in a rule")
        seen.add(f.type)
        member = getattr(f, _MEMBER[f.type])
        if not isinstance(member, dict):
            raise FilterError(f"{where}: type {f.type} needs its {_camel(_MEMBER[f.type])} field")
        config = _CHECKS[f.type](member, matches, f"{where}.{_camel(_MEMBER[f.type])}")
        if f.type == "RequestMirror":
            config["cluster"] = resolve(_mirror_ref(config["backendRef"])) if resolve else ""
        out.append(ir.Filter(type=f.type, config=config))
    if "RequestRedirect" in seen and "URLRewrite" in seen:
        raise FilterError("a rule may have a RequestRedirect or a URLRewrite filter, not both")
    return tuple(out)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.capitalize() for w in rest).replace("Url", "URL")


def _header_modifier(m: dict, matches, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names: set[str] = set()
    for field in ("set", "add"):
        items = m.get(field) or []
        if not isinstance(items, list) or len(items) > _MAX_HEADERS:
            raise FilterError(f"{where}.{field}: a list of at most {_MAX_HEADERS} headers")
        for j, h in enumerate(items):
            if not isinstance(h, dict) or not isinstance(h.get("name"), str) or not isinstance(h.get("value"), str):
                raise FilterError(f"{where}.{field}[{j}]: needs a name and a value (strings)")
            name = h["name"]
            if not _TOKEN.match(name):
                raise FilterError(f"{where}.{field}[{j}].name: {name!r} is not a valid header name")
            if any(c in h["value"] for c in "\r\n\0"):
                raise FilterError(f"{where}.{field}[{j}].value: must not contain CR, LF or NUL")
            if name.lower() in names:
                raise FilterError(f"{where}.{field}[{j}].name: {name!r} is named twice")
            names.add(name.lower())
        if items:
            out[field] = [{"name": h["name"], "value": h["value"]} for h in items]
    remove = m.get("remove") or []
    if not isinstance(remove, list) or len(remove) > _MAX_HEADERS:
        raise FilterError(f"{where}.remove: a list of at most {_MAX_HEADERS} header names")
    for j, name in enumerate(remove):
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise FilterError(f"{where}.remove[{j}]: {name!r} is not a valid header name")
    if remove:
        out["remove"] = list(remove)
    return out


def _path_modifier(m: dict, matches, where: str) -> dict[str, str] | None:
    path = m.get("path")
    if path is None:
        return None
    if not isinstance(path, dict):
        raise FilterError(f"{where}.path: must be an object")
    kind = path.get("type")
    field = {"ReplaceFullPath": "replaceFullPath", "ReplacePrefixMatch": "replacePrefixMatch"}.get(kind)
    if field is None:
        raise FilterError(f"{where}.path.type: must be ReplaceFullPath or ReplacePrefixMatch, got {kind!r}")
    value = path.get(field)
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise FilterError(f"{where}.path.{field}: must be set and start with '/'")
    if kind == "ReplacePrefixMatch" and any(x.path.type != "PathPrefix" for x in matches):
        raise FilterError(f"{where}.path: ReplacePrefixMatch needs every match of the rule to be a PathPrefix")
    return {"type": kind, field: value}


def _hostname(m: dict, where: str) -> str:
    host = m.get("hostname")
    if host is None:
        return ""
    if not isinstance(host, str) or not _HOSTNAME.match(host) or len(host) > 253:
        raise FilterError(f"{where}.hostname: {host!r} is not a valid hostname (no wildcards, lower-case)")
    return host


def _redirect(m: dict, matches, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    scheme = m.get("scheme")
    if scheme is not None:
        if scheme not in ("http", "https"):
            raise FilterError(f"{where}.scheme: must be http or https, got {scheme!r}")
        out["scheme"] = scheme
    host = _hostname(m, where)
    if host:
        out["hostname"] = host
    port = m.get("port")
    if port is not None:
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise FilterError(f"{where}.port: must be a number from 1 to 65535")
        out["port"] = port
    path = _path_modifier(m, matches, where)
    if path:
        out["path"] = path
    code = m.get("statusCode", 302)
    if code not in REDIRECT_CODES:
        raise FilterError(f"{where}.statusCode: must be one of {', '.join(map(str, REDIRECT_CODES))}")
    out["statusCode"] = code
    return out


def _rewrite(m: dict, matches, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    host = _hostname(m, where)
    if host:
        out["hostname"] = host
    path = _path_modifier(m, matches, where)
    if path:
        out["path"] = path
    return out


def _mirror(m: dict, matches, where: str) -> dict[str, Any]:
    ref = m.get("backendRef")
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not ref["name"]:
        raise FilterError(f"{where}.backendRef: needs a name")
    if ref.get("kind", "Service") == "Service" and ref.get("group", "") in ("", "core") and ref.get("port") is None:
        raise FilterError(f"{where}.backendRef.port: required for a Service")
    port = ref.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535):
        raise FilterError(f"{where}.backendRef.port: must be a number from 1 to 65535")
    if "percent" in m and "fraction" in m:
        raise FilterError(f"{where}: set percent or fraction, not both")
    percent = 100.0
    if "percent" in m:
        p = m["percent"]
        if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= 100:
            raise FilterError(f"{where}.percent: must be a whole number from 0 to 100")
        percent = float(p)
    elif "fraction" in m:
        fr = m["fraction"]
        num, den = (fr.get("numerator"), fr.get("denominator", 100)) if isinstance(fr, dict) else (None, None)
        if not isinstance(num, int) or not isinstance(den, int) or den < 1 or not 0 <= num <= den:
            raise FilterError(f"{where}.fraction: needs 0 <= numerator <= denominator, denominator >= 1")
        percent = 100.0 * num / den
    return {"backendRef": {k: ref[k] for k in ("group", "kind", "name", "namespace", "port") if k in ref},
            "percent": percent}


def _mirror_ref(ref: dict) -> r.HTTPBackendRef:
    return r.HTTPBackendRef(
        name=ref["name"], group=ref.get("group", ""), kind=ref.get("kind", "Service"),
        namespace=ref.get("namespace"), port=ref.get("port"),
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_ORIGIN = re.compile(r"^https?://(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?$")


def _cors(m: dict, matches, where: str) -> dict[str, Any]:
    """HTTPCORSFilter (Gateway API, experimental channel), checked as its CRD does."""
    out: dict[str, Any] = {}
    origins = m.get("allowOrigins") or []
    if not isinstance(origins, list) or len(origins) > 64:
        raise FilterError(f"{where}.allowOrigins: a list of at most 64 origins")
    for j, o in enumerate(origins):
        if not isinstance(o, str) or (o != "*" and not _ORIGIN.match(o.lower())):
            raise FilterError(f"{where}.allowOrigins[{j}]: {o!r} is not \"*\" or scheme://host[:port]"
                              " (a \"*.\" wildcard only as the first label)")
    if origins:
        out["allowOrigins"] = list(origins)
    for field, limit in (("allowMethods", 9), ("allowHeaders", 64), ("exposeHeaders", 64)):
        items = m.get(field) or []
        if not isinstance(items, list) or len(items) > limit:
            raise FilterError(f"{where}.{field}: a list of at most {limit} entries")
        if "*" in items and len(items) > 1:
            raise FilterError(f"{where}.{field}: \"*\" must be the only entry")
        for j, v in enumerate(items):
            ok = isinstance(v, str) and (v == "*" or (v in _METHODS if field == "allowMethods" else bool(_TOKEN.match(v))))
            if not ok:
                what = "a method (" + ", ".join(_METHODS) + ")" if field == "allowMethods" else "a header name"
                raise FilterError(f"{where}.{field}[{j}]: {v!r} is not \"*\" or {what}")
        if len({v.lower() for v in items}) != len(items):
            raise FilterError(f"{where}.{field}: entries must be unique")
        if items:
            out[field] = list(items)
    cred = m.get("allowCredentials", False)
    if not isinstance(cred, bool):
        raise FilterError(f"{where}.allowCredentials: must be true or false")
    if cred:
        out["allowCredentials"] = True
    age = m.get("maxAge", 5)
    if not isinstance(age, int) or isinstance(age, bool) or age < 1:
        raise FilterError(f"{where}.maxAge: a whole number of seconds, at least 1")
    out["maxAge"] = age
    return out


def _extension_ref(m: dict, matches, where: str) -> dict[str, Any]:
    for field in ("group", "kind", "name"):
        if not isinstance(m.get(field), str) or (field != "group" and not m[field]):
            raise FilterError(f"{where}.{field}: required (a string)")
    return {"group": m["group"], "kind": m["kind"], "name": m["name"]}


_CHECKS = {
    "CORS": _cors,
    "ExtensionRef": _extension_ref,
    "RequestHeaderModifier": _header_modifier,
    "ResponseHeaderModifier": _header_modifier,
    "RequestRedirect": _redirect,
    "URLRewrite": _rewrite,
    "RequestMirror": _mirror,
}
