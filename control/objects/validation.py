"""Turning a raw object into a typed resource, or a reason why it cannot be.

Rules:

* ``KINDS`` is what FluxGate parses, from the kinds table (``kinds.py``): (apiVersion, kind) → type.
  Anything else is ``Unsupported``: the caller ignores it with a warning, it
  never blocks other objects.
* ``parse`` either returns a resource that translate can use without further
  checks, or raises ``Invalid`` whose reason starts with the path of the
  offending field as the user wrote it (``spec.rules[0].matches[1].path.value:
  must start with '/'``). The checks are the ones the API server would make
  (OpenAPI types, enums, bounds, and the CRDs' CEL rules), so an object that
  ``kubectl apply`` would refuse is refused here too, with the same meaning.
* Namespaces are defaulted here ("default" for namespaced kinds, "" for
  cluster-scoped ones); nothing downstream sees an empty namespace on a
  namespaced object.
* Regular expressions use Python's ``re`` dialect (the data plane compiles them
  with ``re``); a pattern that does not compile is an invalid object, not a
  runtime surprise.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable

import msgspec
import msgspec.inspect

from control.objects.raw import KObject
from control.objects import kinds
from control.objects import resources as r
from control.objects.resources import ObjectKey

# What the cache parses, (apiVersion, kind) → typed resource: the kinds table's.
KINDS: dict[tuple[str, str], type[r.Resource]] = kinds.PARSED
CLUSTER_SCOPED = kinds.CLUSTER_SCOPED
DEFAULT_NAMESPACE = kinds.DEFAULT_NAMESPACE


class Unsupported(Exception):
    """The object's apiVersion/kind is not one FluxGate reads."""


class Invalid(ValueError):
    """The object breaks the API's rules; the message names the field."""


def identify(obj: KObject) -> ObjectKey | None:
    """The key ``obj`` will have once parsed, or None if its kind is unsupported."""
    if (obj.api_version, obj.kind) not in KINDS:
        return None
    if obj.kind in CLUSTER_SCOPED:
        return ObjectKey(obj.kind, "", obj.name)
    return ObjectKey(obj.kind, obj.namespace or DEFAULT_NAMESPACE, obj.name)


def parse(obj: KObject) -> r.Resource:
    """``obj`` as a typed resource; raises ``Unsupported`` or ``Invalid``."""
    cls = KINDS.get((obj.api_version, obj.kind))
    if cls is None:
        raise Unsupported(f"{obj.api_version} {obj.kind} is not a supported kind")
    key = identify(obj)
    assert key is not None
    raw = dict(obj.raw)
    raw["metadata"] = {**obj.raw["metadata"], "namespace": key.namespace}
    try:
        resource = msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise Invalid(_msgspec_reason(str(exc), cls)) from None
    problems = list(_CHECKS.get(cls, _no_checks)(resource))
    if problems:
        raise Invalid("; ".join(problems))
    return resource


# --- shared formats (the API's patterns) -------------------------------------------

_HOSTNAME = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# RFC 1123 subdomain: section names, Service externalName.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$")
_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_DURATION_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def hostname_problem(value: str) -> str:
    """Why ``value`` is not a Gateway API Hostname ("" if it is one)."""
    if len(value) > 253 or not _HOSTNAME.match(value):
        return f"{value!r} is not a valid hostname (lower-case DNS name, optionally '*.' first)"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return ""
    return f"{value!r} is an IP address; hostnames must be DNS names"


def duration_ms(value: str) -> int:
    """A Gateway API Duration ("1h30m", "500ms") in milliseconds (format pre-checked)."""
    return sum(int(n) * _DURATION_MS[unit] for n, unit in _DURATION_PART.findall(value))


# --- per kind ------------------------------------------------------------------------


def _no_checks(_: Any) -> Iterable[str]:
    return ()


def _check_gateway_class(gc: r.GatewayClass) -> Iterable[str]:
    if not gc.spec.controller_name:
        yield "spec.controllerName: must not be empty"


def _check_gateway(gw: r.Gateway) -> Iterable[str]:
    spec = gw.spec
    if not spec.gateway_class_name:
        yield "spec.gatewayClassName: must not be empty"
    if not 1 <= len(spec.listeners) <= 64:
        yield "spec.listeners: must have between 1 and 64 entries"
    names: set[str] = set()
    combos: set[tuple] = set()
    for i, lst in enumerate(spec.listeners):
        at = f"spec.listeners[{i}]"
        if not _SUBDOMAIN.match(lst.name):
            yield f"{at}.name: {lst.name!r} is not a valid section name"
        if lst.name in names:
            yield f"{at}.name: listener name {lst.name!r} is used twice"
        names.add(lst.name)
        if lst.hostname is not None and (problem := hostname_problem(lst.hostname)):
            yield f"{at}.hostname: {problem}"
        combo = (lst.port, lst.protocol, lst.hostname or "")
        if combo in combos:
            yield f"{at}: another listener has the same port, protocol and hostname"
        combos.add(combo)
        if lst.protocol in ("HTTP", "TCP", "UDP") and lst.tls is not None:
            yield f"{at}.tls: must not be set for protocol {lst.protocol}"
        if lst.protocol in ("HTTPS", "TLS") and lst.tls is None:
            yield f"{at}.tls: required for protocol {lst.protocol}"
        ns = lst.allowed_routes.namespaces
        if ns.from_ == "Selector" and ns.selector is None:
            yield f"{at}.allowedRoutes.namespaces.selector: required when from is Selector"
        if ns.selector is not None:
            yield from _check_selector(ns.selector, f"{at}.allowedRoutes.namespaces.selector")
    for i, addr in enumerate(spec.addresses):
        if not addr.value:
            yield f"spec.addresses[{i}].value: must not be empty"


def _check_selector(sel: r.LabelSelector, at: str) -> Iterable[str]:
    for i, req in enumerate(sel.match_expressions):
        has_values = bool(req.values)
        if req.operator in ("In", "NotIn") and not has_values:
            yield f"{at}.matchExpressions[{i}].values: required for operator {req.operator}"
        if req.operator in ("Exists", "DoesNotExist") and has_values:
            yield f"{at}.matchExpressions[{i}].values: must be empty for operator {req.operator}"


def _check_http_route(route: r.HTTPRoute) -> Iterable[str]:
    spec = route.spec
    for i, host in enumerate(spec.hostnames):
        if problem := hostname_problem(host):
            yield f"spec.hostnames[{i}]: {problem}"
    for i, ref in enumerate(spec.parent_refs):
        if ref.section_name is not None and not _SUBDOMAIN.match(ref.section_name):
            yield f"spec.parentRefs[{i}].sectionName: {ref.section_name!r} is not a valid section name"
    if len(spec.rules) > 16:
        yield "spec.rules: at most 16 rules are allowed"
    names: set[str] = set()
    for i, rule in enumerate(spec.rules):
        at = f"spec.rules[{i}]"
        if rule.name is not None:
            if rule.name in names:
                yield f"{at}.name: rule name {rule.name!r} is used twice"
            names.add(rule.name)
        for j, match in enumerate(rule.matches):
            yield from _check_match(match, f"{at}.matches[{j}]")
        for j, ref in enumerate(rule.backend_refs):
            if ref.group == "" and ref.kind == "Service" and ref.port is None:
                yield f"{at}.backendRefs[{j}].port: required for a Service"
        if rule.timeouts is not None:
            yield from _check_timeouts(rule.timeouts, f"{at}.timeouts")
        if rule.retry is not None:
            backoff = rule.retry.backoff
            if backoff is not None and not _DURATION.match(backoff):
                yield f"{at}.retry.backoff: {backoff!r} is not a duration (e.g. '100ms', '1s')"
            if len(set(rule.retry.codes)) != len(rule.retry.codes):
                yield f"{at}.retry.codes: codes must be unique"


def _check_match(match: r.HTTPRouteMatch, at: str) -> Iterable[str]:
    path = match.path
    if path.type == "RegularExpression":
        yield from _check_regex(path.value, f"{at}.path.value")
    else:
        yield from (f"{at}.path.value: {p}" for p in _path_problems(path.value))
    for kind, items in (("headers", match.headers), ("queryParams", match.query_params)):
        for k, item in enumerate(items):
            if not HEADER_NAME.match(item.name) or len(item.name) > 256:
                yield f"{at}.{kind}[{k}].name: {item.name!r} is not a valid name"
            if item.type == "RegularExpression":
                yield from _check_regex(item.value, f"{at}.{kind}[{k}].value")


def _path_problems(value: str) -> Iterable[str]:
    """The CEL rules of HTTPPathMatch for Exact and PathPrefix values."""
    if not value.startswith("/"):
        yield f"{value!r} must start with '/'"
        return
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in value:
            yield f"{value!r} must not contain {bad!r}"
    for bad in ("/..", "/."):
        if value.endswith(bad):
            yield f"{value!r} must not end with {bad!r}"
    if len(value) > 1024:
        yield "must be at most 1024 characters"
    elif not _PATH_CHARS.match(value):
        yield f"{value!r} contains characters that are not allowed in a path"


def _check_regex(value: str, at: str) -> Iterable[str]:
    try:
        re.compile(value)
    except re.error as exc:
        yield f"{at}: invalid regular expression {value!r}: {exc}"


def _check_timeouts(t: r.HTTPRouteTimeouts, at: str) -> Iterable[str]:
    for name, value in (("request", t.request), ("backendRequest", t.backend_request)):
        if value is not None and not _DURATION.match(value):
            yield f"{at}.{name}: {value!r} is not a duration (e.g. '10s', '1m30s', '500ms')"
            return
    if t.request and t.backend_request:
        request, backend = duration_ms(t.request), duration_ms(t.backend_request)
        if request and backend > request:
            yield f"{at}.backendRequest: must not be longer than the request timeout"


def _check_reference_grant(grant: r.ReferenceGrant) -> Iterable[str]:
    if not grant.spec.from_:
        yield "spec.from: must have at least one entry"
    if not grant.spec.to:
        yield "spec.to: must have at least one entry"


def _check_service(svc: r.Service) -> Iterable[str]:
    if svc.spec.type == "ExternalName":
        name = svc.spec.external_name.rstrip(".")  # a trailing dot is a fully qualified name
        if not name:
            yield "spec.externalName: required for type ExternalName"
        elif len(name) > 253 or not _SUBDOMAIN.match(name):
            yield f"spec.externalName: {svc.spec.external_name!r} is not a valid DNS name"
    for i, port in enumerate(svc.ports):
        target = port.target_port
        if isinstance(target, int) and not 1 <= target <= 65535:
            yield f"spec.ports[{i}].targetPort: must be between 1 and 65535"
    if len(svc.ports) > 1 and any(not p.name for p in svc.ports):
        yield "spec.ports: every port needs a name when there is more than one"


def _check_endpoint_slice(eps: r.EndpointSlice) -> Iterable[str]:
    for i, ep in enumerate(eps.endpoints or ()):
        if not ep.addresses:
            yield f"endpoints[{i}].addresses: must have at least one address"



# --- Ingress, IngressClass: the API server's own checks (networking/validation) ------

_WILDCARD_SUBDOMAIN = re.compile(r"^\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^[-a-z0-9]+$")
_DOMAIN_PATH = re.compile(r"^[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")
_INGRESS_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INGRESS_PATH_SUFFIXES = ("/..", "/.")


def path_problems(value: str) -> list[str]:
    """Why ``value`` is not a valid Gateway API path (Exact/PathPrefix); [] if it is."""
    return list(_path_problems(value))


def ingress_host_problem(value: str) -> str:
    """Why ``value`` is not a valid Ingress host ("" if it is one): a lower-case
    DNS subdomain, or ``*.`` and one, never an IP address."""
    try:
        ipaddress.ip_address(value)
        return f"{value!r} must be a DNS name, not an IP address"
    except ValueError:
        pass
    pattern = _WILDCARD_SUBDOMAIN if "*" in value else _SUBDOMAIN
    if len(value) > 253 or not pattern.match(value):
        wild = " (a wildcard is '*.' followed by one)" if "*" in value else ""
        return f"{value!r} is not a valid DNS subdomain (lower-case){wild}"
    return ""


def _subdomain_problem(value: str) -> str:
    if len(value) > 253 or not _SUBDOMAIN.match(value):
        return f"{value!r} is not a valid DNS subdomain (lower-case alphanumerics, '-' and '.')"
    return ""


def _port_name_problem(name: str) -> str:
    if (len(name) > 15 or not _PORT_NAME.match(name) or not re.search("[a-z]", name)
            or "--" in name or name.startswith("-") or name.endswith("-")):
        return (f"{name!r} is not a valid port name (at most 15 lower-case alphanumerics"
                " or '-', with a letter, no leading, trailing or double '-')")
    return ""


def _check_ingress(ing: r.Ingress) -> Iterable[str]:
    spec = ing.spec
    if not spec.rules and spec.default_backend is None:
        yield "spec: either `defaultBackend` or `rules` must be specified"
    if spec.default_backend is not None:
        yield from _check_ingress_backend(spec.default_backend, "spec.defaultBackend")
    for i, rule in enumerate(spec.rules or ()):
        at = f"spec.rules[{i}]"
        if rule.host and (problem := ingress_host_problem(rule.host)):
            yield f"{at}.host: {problem}"
        if rule.http is None:
            continue
        if not rule.http.paths:
            yield f"{at}.http.paths: required"
        for j, path in enumerate(rule.http.paths or ()):
            yield from _check_ingress_path(path, f"{at}.http.paths[{j}]")
    for i, tls in enumerate(spec.tls or ()):
        for k, host in enumerate(tls.hosts or ()):
            if problem := ingress_host_problem(host):
                yield f"spec.tls[{i}].hosts[{k}]: {problem}"
        if tls.secret_name and (problem := _subdomain_problem(tls.secret_name)):
            yield f"spec.tls[{i}].secretName: {problem}"
    if spec.ingress_class_name is not None and (problem := _subdomain_problem(spec.ingress_class_name)):
        yield f"spec.ingressClassName: {problem}"
    legacy = ing.annotations.get(r.INGRESS_CLASS_ANNOTATION)
    if legacy is not None and spec.ingress_class_name is not None and legacy != spec.ingress_class_name:
        yield (f"metadata.annotations[{r.INGRESS_CLASS_ANNOTATION}]: {legacy!r} must match"
               " `ingressClassName` when both are specified")


def _check_ingress_path(path: r.HTTPIngressPath, at: str) -> Iterable[str]:
    value = path.path
    if path.path_type is None:
        yield f"{at}.pathType: required (Exact, Prefix or ImplementationSpecific)"
    elif path.path_type in ("Exact", "Prefix"):
        if not value.startswith("/"):
            yield f"{at}.path: {value!r} must be an absolute path (start with '/')"
        for bad in _INGRESS_PATH_SEQUENCES:
            if bad in value:
                yield f"{at}.path: {value!r} must not contain {bad!r}"
        for bad in _INGRESS_PATH_SUFFIXES:
            if value.endswith(bad):
                yield f"{at}.path: {value!r} cannot end with {bad!r}"
    elif value and not value.startswith("/"):  # ImplementationSpecific: "" is allowed
        yield f"{at}.path: {value!r} must be an absolute path (start with '/')"
    yield from _check_ingress_backend(path.backend, f"{at}.backend")


def _check_ingress_backend(backend: r.IngressBackend, at: str) -> Iterable[str]:
    if backend.service is not None and backend.resource is not None:
        yield f"{at}: cannot set both resource and service backends"
        return
    if backend.resource is not None:
        yield from _check_local_ref(backend.resource, f"{at}.resource")
        return
    if backend.service is None:
        yield f"{at}: resource or service backend is required"
        return
    svc = backend.service
    if not svc.name:
        yield f"{at}.service.name: required"
    elif len(svc.name) > 63 or not _DNS1035_LABEL.match(svc.name):
        yield f"{at}.service.name: {svc.name!r} is not a valid Service name (DNS-1035 label)"
    port = svc.port
    if port.name and port.number:
        yield f"{at}: cannot set both port name & port number"
    elif port.name:
        if problem := _port_name_problem(port.name):
            yield f"{at}.service.port.name: {problem}"
    elif port.number:
        if not 1 <= port.number <= 65535:
            yield f"{at}.service.port.number: must be between 1 and 65535"
    else:
        yield f"{at}: port name or number is required"


def _check_local_ref(ref: r.TypedLocalObjectReference | r.IngressClassParametersReference,
                     at: str) -> Iterable[str]:
    if ref.api_group and (problem := _subdomain_problem(ref.api_group)):
        yield f"{at}.apiGroup: {problem}"
    for field, value in (("kind", ref.kind), ("name", ref.name)):
        if not value:
            yield f"{at}.{field}: required"
        elif value in (".", "..") or "/" in value or "%" in value:
            yield f"{at}.{field}: {value!r} may not be '.' or '..' nor contain '/' or '%'"


def _check_ingress_class(ic: r.IngressClass) -> Iterable[str]:
    controller = ic.spec.controller
    if not controller:
        yield "spec.controller: required"
    elif len(controller) > 250:
        yield "spec.controller: must be at most 250 characters"
    else:
        domain, _, path = controller.partition("/")
        if not domain or not path:
            yield f"spec.controller: {controller!r} must be a domain-prefixed path (such as 'acme.io/foo')"
        elif problem := _subdomain_problem(domain):
            yield f"spec.controller: {problem}"
        elif not _DOMAIN_PATH.match(path):
            yield f"spec.controller: {controller!r} has characters not allowed in a path"
    params = ic.spec.parameters
    if params is not None:
        yield from _check_local_ref(params, "spec.parameters")
        if params.scope == "Namespace" and not params.namespace:
            yield "spec.parameters.namespace: required when scope is Namespace"
        if params.scope == "Cluster" and params.namespace is not None:
            yield "spec.parameters.namespace: must not be set when scope is Cluster"
        if params.namespace and (len(params.namespace) > 63 or not _SUBDOMAIN.match(params.namespace)
                                 or "." in params.namespace):
            yield f"spec.parameters.namespace: {params.namespace!r} is not a valid namespace name"


_CHECKS = {
    r.GatewayClass: _check_gateway_class,
    r.Gateway: _check_gateway,
    r.HTTPRoute: _check_http_route,
    r.ReferenceGrant: _check_reference_grant,
    r.Service: _check_service,
    r.EndpointSlice: _check_endpoint_slice,
    r.Ingress: _check_ingress,
    r.IngressClass: _check_ingress_class,
}


# --- FluxGateRoute: HTTPRoute's checks plus canary, requestHeaders, retries ---------

# %{client_ip}, %{request_id}, %{header:NAME}, %{path_segment:N}
PLACEHOLDER = re.compile(r"%\{([^{}]*)\}")
_PLACEHOLDER_BODY = re.compile(r"^(client_ip|request_id|header:[A-Za-z0-9!#$%&'*+\-.^_`|~]+|path_segment:[1-9][0-9]?)$")
# Framing, hop-by-hop and forwarding headers: the data plane writes these itself.
_PROXY_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
    "te", "trailer", "upgrade", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
})
_COOKIE_NAME = HEADER_NAME  # an RFC 6265 token
_COOKIE_VALUE = re.compile(r"^[!#-+\--:<-\[\]-~]*$")  # cookie-octets


def _check_fluxgate_route(route: r.FluxGateRoute) -> Iterable[str]:
    yield from _check_http_route(route)  # type: ignore[arg-type]  # the same fields
    for i, rule in enumerate(route.spec.rules):
        at = f"spec.rules[{i}]"
        names: set[str] = set()
        for j, h in enumerate(rule.request_headers):
            if not HEADER_NAME.match(h.name) or len(h.name) > 256:
                yield f"{at}.requestHeaders[{j}].name: {h.name!r} is not a valid header name"
            elif h.name.lower() in names:
                yield f"{at}.requestHeaders[{j}].name: {h.name!r} is named twice"
            elif h.name.lower() in _PROXY_HEADERS:
                yield (f"{at}.requestHeaders[{j}].name: {h.name!r} is set by the proxy itself"
                       " (for Host, use a URLRewrite hostname)")
            names.add(h.name.lower())
            if any(c in h.value for c in "\r\n\0"):
                yield f"{at}.requestHeaders[{j}].value: must not contain CR, LF or NUL"
            for body in PLACEHOLDER.findall(h.value):
                if not _PLACEHOLDER_BODY.match(body):
                    yield (f"{at}.requestHeaders[{j}].value: unknown placeholder %{{{body}}} (use"
                           " %{client_ip}, %{request_id}, %{header:NAME} or %{path_segment:N}, N from 1 to 99)")
        if len(rule.request_headers) > 16:
            yield f"{at}.requestHeaders: at most 16 headers"
        if rule.retries is not None:
            if not rule.retries.retry_on:
                yield f"{at}.retries.retryOn: must have at least one entry"
            if rule.retries.backoff is not None and not _DURATION.match(rule.retries.backoff):
                yield f"{at}.retries.backoff: {rule.retries.backoff!r} is not a duration (e.g. '100ms', '1s')"
            if rule.retry is not None:
                yield f"{at}: set retry (Gateway API) or retries, not both"
        canary = rule.canary
        if canary is None:
            continue
        at = f"{at}.canary"
        if not canary.backend_refs:
            yield f"{at}.backendRefs: must have at least one entry"
        for j, ref in enumerate(canary.backend_refs):
            if ref.group == "" and ref.kind == "Service" and ref.port is None:
                yield f"{at}.backendRefs[{j}].port: required for a Service"
            if ref.filters:
                yield f"{at}.backendRefs[{j}].filters: not supported on canary backends"
        if not rule.backend_refs:
            yield f"{at}: the rule needs backendRefs of its own to split traffic with"
        if canary.weight == 0 and canary.header is None and canary.cookie is None:
            yield f"{at}: set a weight, a header or a cookie (otherwise no request reaches it)"
        if canary.header is not None:
            if not HEADER_NAME.match(canary.header.name) or len(canary.header.name) > 256:
                yield f"{at}.header.name: {canary.header.name!r} is not a valid header name"
            if canary.header.value is not None and any(c in canary.header.value for c in "\r\n\0"):
                yield f"{at}.header.value: must not contain CR, LF or NUL"
        if canary.cookie is not None:
            if not _COOKIE_NAME.match(canary.cookie.name):
                yield f"{at}.cookie.name: {canary.cookie.name!r} is not a valid cookie name"
            if not canary.cookie.value or not _COOKIE_VALUE.match(canary.cookie.value):
                yield f"{at}.cookie.value: {canary.cookie.value!r} is not a valid cookie value"


_CHECKS[r.FluxGateRoute] = _check_fluxgate_route


# --- msgspec's wording, turned round to name the field first ------------------------

_AT = re.compile(r"^(?P<what>.*) - at `\$(?P<path>.*)`$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_PATH_PART = re.compile(r"\[[^\]]*\]|[^.\[]+")


def _msgspec_reason(message: str, cls: type) -> str:
    m = _AT.match(message)
    what, path = (m["what"], m["path"].lstrip(".")) if m else (message, "")
    missing = _MISSING.match(what)
    if missing:
        path = f"{path}.{missing['field']}" if path else missing["field"]
        what = "required field is missing"
    else:
        what = what.replace("`", "")
        what = what[:1].lower() + what[1:]
        if what.startswith("invalid enum value") and (values := _enum_values(cls, path)):
            what += f" (expected one of: {', '.join(values)})"
    return f"{path}: {what}" if path else what


def _enum_values(cls: type, path: str) -> list[str]:
    """The allowed values of the Literal field at ``path`` of ``cls`` ([] if unknown)."""
    info = msgspec.inspect.type_info(cls)
    for part in _PATH_PART.findall(path):
        info = _unwrap(info)
        if part.startswith("["):
            info = getattr(info, "item_type", None) or getattr(info, "value_type", None)
        elif isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == part), None)
        else:
            info = None
        if info is None:
            return []
    info = _unwrap(info)
    if isinstance(info, msgspec.inspect.LiteralType):
        return [str(v) for v in info.values]
    return []


def _unwrap(info: Any) -> Any:
    """The non-null member of an Optional."""
    if isinstance(info, msgspec.inspect.UnionType):
        members = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        return members[0] if len(members) == 1 else info
    return info
