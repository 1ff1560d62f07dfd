"""HTTPRoute filters: validated as the Gateway API specifies, then kept as typed IR.

Rules:

* A filter is either understood completely or its rule is dropped with a
  reason (the spec's option for filters an implementation cannot honour: never
  serve a rule without its redirect or header change). ``convert`` raises
  ``FilterError`` naming the first problem by its field path
  (``filters[1].requestRedirect.port: ...``).
* ``READERS`` is the whole set: one row per Gateway API filter type, naming
  the member field the type needs (as the user writes it) and the reader that
  turns that member (a dict, as written) into the filter's IR kind
  (``control/ir.py``), whose tag is the type's name. A type without a row is
  "unknown".
* One implementation for every caller: ``httproute.rules`` (HTTPRoute and
  FluxGateRoute rules) and the admission webhook (``control/servers/webhook.py``)
  both run ``convert``, so status conditions, ``fluxgate validate`` and
  ``kubectl apply`` give the same message for the same filter.
* Across a rule: a type appears once, except RequestMirror and ExtensionRef;
  RequestRedirect and URLRewrite exclude each other; ReplacePrefixMatch needs
  every match of the rule to be a PathPrefix.

Supported: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect,
URLRewrite, RequestMirror (resolved to its cluster while reading; "" when the
backend cannot be resolved, which disables the mirror, not the rule), CORS.
An ExtensionRef is validated and kept as written: FluxGate has no custom
filter kinds yet, so httproute answers its rule's requests with 500 (the spec:
never skip a filter that cannot be resolved) and reports the reference in
ResolvedRefs. On a backendRef only the kinds of ``ir.BackendFilter`` are
supported; other filters there drop the rule ("not supported yet").

A new Gateway API filter type: its IR kind (control/ir.py lists the steps), a
reader here with its row in ``READERS``, and its member field on
``resources.HTTPRouteFilter`` (a typed resource keeps only the members it
declares). A filter that another object asks for (FluxGateRoute's header
templates, later policies) has no row here: its translator builds the IR kind.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

from control import ir
from control.objects import resources as r
from control.objects.validation import HEADER_NAME

# Resolves a mirror's backendRef to a cluster name ("" when it cannot be).
Resolve = Callable[[r.HTTPBackendRef], str]
# On a backendRef (extended support): header modifiers only, for now.
BACKEND_FILTERS = tuple(ir.filter_kinds(ir.BackendFilter))
REPEATABLE = ("RequestMirror", "ExtensionRef")  # the types a rule may carry more than once
_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_HEADERS = 16
REDIRECT_CODES = (301, 302, 303, 307, 308)


class FilterError(ValueError):
    """Why a filter cannot be served; becomes the reason its rule is dropped."""


class Rule(NamedTuple):
    """What a reader may need of the filter's rule besides the filter."""

    prefix_only: bool  # every match is a PathPrefix (ReplacePrefixMatch needs it)
    resolve: Resolve | None  # for a mirror's backendRef; None: not resolved ("")


class Reader(NamedTuple):
    field: str  # the member the type needs, as written: "urlRewrite"
    read: Callable[[dict, str, Rule], ir.Filter]  # (member, its field path, rule) → IR


def convert(filters: tuple[r.HTTPRouteFilter, ...], matches: tuple[r.HTTPRouteMatch, ...],
            resolve: Resolve | None = None) -> tuple[ir.Filter, ...]:
    """The filters of a rule with ``matches`` (as written; none is the default
    PathPrefix "/") as IR, or FilterError naming the first problem."""
    if not filters:  # most rules: nothing to build (translate runs this for every rule)
        return ()
    rule = Rule(all(m.path.type == "PathPrefix" for m in matches), resolve)
    out: list[ir.Filter] = []
    seen: set[str] = set()
    for i, f in enumerate(filters):
        where = f"filters[{i}]"
        reader = READERS.get(f.type)
        if reader is None:
            raise FilterError(f"{where}: unknown filter type {f.type!r}")
        if f.type in seen and f.type not in REPEATABLE:
            raise FilterError(f"{where}: {f.type} may appear only once in a rule")
        seen.add(f.type)
        member = getattr(f, _attribute(reader.field))
        if not isinstance(member, dict):
            raise FilterError(f"{where}: type {f.type} needs its {reader.field} field")
        out.append(reader.read(member, f"{where}.{reader.field}", rule))
    if "RequestRedirect" in seen and "URLRewrite" in seen:
        raise FilterError("a rule may have a RequestRedirect or a URLRewrite filter, not both")
    return tuple(out)


def _attribute(field: str) -> str:
    """The Python name of a camelCase field (resources are ``rename="camel"``): url_rewrite."""
    return re.sub(r"[A-Z]", lambda c: "_" + c[0].lower(), field)


# --- the readers, one per type ---------------------------------------------------------


def _header_changes(m: dict, where: str) -> dict[str, tuple]:
    """HTTPHeaderFilter's set, add and remove, checked; as keyword arguments of its IR kind."""
    out: dict[str, tuple] = {}
    names: set[str] = set()
    for field in ("set", "add"):
        items = m.get(field) or []
        if not isinstance(items, list) or len(items) > _MAX_HEADERS:
            raise FilterError(f"{where}.{field}: a list of at most {_MAX_HEADERS} headers")
        for j, h in enumerate(items):
            if not isinstance(h, dict) or not isinstance(h.get("name"), str) or not isinstance(h.get("value"), str):
                raise FilterError(f"{where}.{field}[{j}]: needs a name and a value (strings)")
            name = h["name"]
            if not HEADER_NAME.match(name):
                raise FilterError(f"{where}.{field}[{j}].name: {name!r} is not a valid header name")
            if any(c in h["value"] for c in "\r\n\0"):
                raise FilterError(f"{where}.{field}[{j}].value: must not contain CR, LF or NUL")
            if name.lower() in names:
                raise FilterError(f"{where}.{field}[{j}].name: {name!r} is named twice")
            names.add(name.lower())
        out[field] = tuple(ir.HeaderValue(name=h["name"], value=h["value"]) for h in items)
    remove = m.get("remove") or []
    if not isinstance(remove, list) or len(remove) > _MAX_HEADERS:
        raise FilterError(f"{where}.remove: a list of at most {_MAX_HEADERS} header names")
    for j, name in enumerate(remove):
        if not isinstance(name, str) or not HEADER_NAME.match(name):
            raise FilterError(f"{where}.remove[{j}]: {name!r} is not a valid header name")
    out["remove"] = tuple(remove)
    return out


def _request_header_modifier(m: dict, where: str, rule: Rule) -> ir.RequestHeaderModifier:
    return ir.RequestHeaderModifier(**_header_changes(m, where))


def _response_header_modifier(m: dict, where: str, rule: Rule) -> ir.ResponseHeaderModifier:
    return ir.ResponseHeaderModifier(**_header_changes(m, where))


def _path_modifier(m: dict, where: str, rule: Rule) -> ir.PathModifier | None:
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
    if kind == "ReplacePrefixMatch" and not rule.prefix_only:
        raise FilterError(f"{where}.path: ReplacePrefixMatch needs every match of the rule to be a PathPrefix")
    return ir.PathModifier(type=kind, value=value)


def _hostname(m: dict, where: str) -> str:
    host = m.get("hostname")
    if host is None:
        return ""
    if not isinstance(host, str) or not _HOSTNAME.match(host) or len(host) > 253:
        raise FilterError(f"{where}.hostname: {host!r} is not a valid hostname (no wildcards, lower-case)")
    return host


def _port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _request_redirect(m: dict, where: str, rule: Rule) -> ir.RequestRedirect:
    scheme = m.get("scheme")
    if scheme is not None and scheme not in ("http", "https"):
        raise FilterError(f"{where}.scheme: must be http or https, got {scheme!r}")
    host = _hostname(m, where)
    port = m.get("port")
    if port is not None and not _port(port):
        raise FilterError(f"{where}.port: must be a number from 1 to 65535")
    path = _path_modifier(m, where, rule)
    code = m.get("statusCode", 302)
    if code not in REDIRECT_CODES:
        raise FilterError(f"{where}.statusCode: must be one of {', '.join(map(str, REDIRECT_CODES))}")
    return ir.RequestRedirect(scheme=scheme or "", hostname=host, port=port or 0, path=path, status_code=code)


def _url_rewrite(m: dict, where: str, rule: Rule) -> ir.URLRewrite:
    host = _hostname(m, where)
    return ir.URLRewrite(hostname=host, path=_path_modifier(m, where, rule))


def _request_mirror(m: dict, where: str, rule: Rule) -> ir.RequestMirror:
    ref = m.get("backendRef")
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not ref["name"]:
        raise FilterError(f"{where}.backendRef: needs a name")
    if ref.get("kind", "Service") == "Service" and ref.get("group", "") in ("", "core") and ref.get("port") is None:
        raise FilterError(f"{where}.backendRef.port: required for a Service")
    port = ref.get("port")
    if port is not None and not _port(port):
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
    backend = r.HTTPBackendRef(name=ref["name"], group=ref.get("group", ""), kind=ref.get("kind", "Service"),
                               namespace=ref.get("namespace"), port=port)
    return ir.RequestMirror(cluster=rule.resolve(backend) if rule.resolve else "", percent=percent)


_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_ORIGIN = re.compile(r"^https?://(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?$")


def _cors(m: dict, where: str, rule: Rule) -> ir.CORS:
    """HTTPCORSFilter (Gateway API, experimental channel), checked as its CRD does."""
    origins = m.get("allowOrigins") or []
    if not isinstance(origins, list) or len(origins) > 64:
        raise FilterError(f"{where}.allowOrigins: a list of at most 64 origins")
    for j, o in enumerate(origins):
        if not isinstance(o, str) or (o != "*" and not _ORIGIN.match(o.lower())):
            raise FilterError(f"{where}.allowOrigins[{j}]: {o!r} is not \"*\" or scheme://host[:port]"
                              " (a \"*.\" wildcard only as the first label)")
    lists = {"allow_origins": tuple(origins)}
    for field, limit in (("allowMethods", 9), ("allowHeaders", 64), ("exposeHeaders", 64)):
        items = m.get(field) or []
        if not isinstance(items, list) or len(items) > limit:
            raise FilterError(f"{where}.{field}: a list of at most {limit} entries")
        if "*" in items and len(items) > 1:
            raise FilterError(f"{where}.{field}: \"*\" must be the only entry")
        for j, v in enumerate(items):
            ok = isinstance(v, str) and (v == "*" or (v in _METHODS if field == "allowMethods"
                                                      else bool(HEADER_NAME.match(v))))
            if not ok:
                what = "a method (" + ", ".join(_METHODS) + ")" if field == "allowMethods" else "a header name"
                raise FilterError(f"{where}.{field}[{j}]: {v!r} is not \"*\" or {what}")
        if len({v.lower() for v in items}) != len(items):
            raise FilterError(f"{where}.{field}: entries must be unique")
        lists[_attribute(field)] = tuple(items)
    cred = m.get("allowCredentials", False)
    if not isinstance(cred, bool):
        raise FilterError(f"{where}.allowCredentials: must be true or false")
    age = m.get("maxAge", 5)
    if not isinstance(age, int) or isinstance(age, bool) or age < 1:
        raise FilterError(f"{where}.maxAge: a whole number of seconds, at least 1")
    return ir.CORS(**lists, allow_credentials=cred, max_age=age)


def _extension_ref(m: dict, where: str, rule: Rule) -> ir.ExtensionRef:
    for field in ("group", "kind", "name"):
        if not isinstance(m.get(field), str) or (field != "group" and not m[field]):
            raise FilterError(f"{where}.{field}: required (a string)")
    return ir.ExtensionRef(group=m["group"], kind=m["kind"], name=m["name"])


READERS: dict[str, Reader] = {
    "RequestHeaderModifier": Reader("requestHeaderModifier", _request_header_modifier),
    "ResponseHeaderModifier": Reader("responseHeaderModifier", _response_header_modifier),
    "RequestRedirect": Reader("requestRedirect", _request_redirect),
    "URLRewrite": Reader("urlRewrite", _url_rewrite),
    "RequestMirror": Reader("requestMirror", _request_mirror),
    "CORS": Reader("cors", _cors),
    "ExtensionRef": Reader("extensionRef", _extension_ref),
}
