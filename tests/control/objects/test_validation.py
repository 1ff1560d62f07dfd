"""validation.parse: typed resources, or a reason that names the field."""

from __future__ import annotations

import pytest
import yaml

from control.objects.raw import KObject
from control.objects import resources as r
from control.objects import validation


def _parse(text: str) -> r.Resource:
    return validation.parse(KObject(yaml.safe_load(text), "t.yaml", 1))


def _route(rules: str, extra: str = "") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  {extra}
  rules: {rules}
"""


def _gateway(listeners: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec: {{gatewayClassName: fluxgate, listeners: {listeners}}}
"""


def test_validation_parse_applies_the_api_defaults():
    route = _parse(_route("[{backendRefs: [{name: web, port: 80}]}]", "parentRefs: [{name: gw}]"))
    assert isinstance(route, r.HTTPRoute)
    assert route.key == ("HTTPRoute", "default", "web")
    ref = route.spec.parent_refs[0]
    assert (ref.group, ref.kind, ref.namespace) == ("gateway.networking.k8s.io", "Gateway", None)
    backend = route.spec.rules[0].backend_refs[0]
    assert (backend.group, backend.kind, backend.weight) == ("", "Service", 1)
    gw = _parse(_gateway("[{name: http, port: 80, protocol: HTTP}]"))
    assert gw.spec.listeners[0].allowed_routes.namespaces.from_ == "Same"


def test_validation_parse_accepts_v1beta1_gateway_api():
    route = _parse(_route("[]").replace("/v1\n", "/v1beta1\n"))
    assert isinstance(route, r.HTTPRoute)


def test_validation_parse_refuses_unsupported_kinds():
    with pytest.raises(validation.Unsupported):
        _parse("{apiVersion: gateway.networking.k8s.io/v1alpha2, kind: TCPRoute, metadata: {name: x}}")


@pytest.mark.parametrize("text, reason", [
    (_gateway("[{name: http, port: 0, protocol: HTTP}]"),
     "spec.listeners[0].port: expected int >= 1"),
    (_gateway("[{name: http, port: '80', protocol: HTTP}]"),
     "spec.listeners[0].port: expected int, got str"),
    (_gateway("[{name: http, protocol: HTTP}]"),
     "spec.listeners[0].port: required field is missing"),
    (_gateway("[{name: Http, port: 80, protocol: HTTP}]"),
     "spec.listeners[0].name: 'Http' is not a valid section name"),
    (_gateway("[{name: a, port: 80, protocol: HTTP}, {name: a, port: 81, protocol: HTTP}]"),
     "spec.listeners[1].name: listener name 'a' is used twice"),
    (_gateway("[{name: a, port: 80, protocol: HTTP}, {name: b, port: 80, protocol: HTTP}]"),
     "spec.listeners[1]: another listener has the same port, protocol and hostname"),
    (_gateway("[{name: a, port: 80, protocol: HTTP, hostname: '*'}]"),
     "spec.listeners[0].hostname: '*' is not a valid hostname"),
    (_gateway("[{name: a, port: 80, protocol: HTTP, hostname: 10.0.0.1}]"),
     "spec.listeners[0].hostname: '10.0.0.1' is an IP address"),
    (_gateway("[{name: a, port: 443, protocol: HTTPS}]"),
     "spec.listeners[0].tls: required for protocol HTTPS"),
    (_gateway("[{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Any}}}]"),
     "allowedRoutes.namespaces.from: invalid enum value 'Any' (expected one of: All, Same, Selector)"),
    (_gateway("[{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}]"),
     "spec.listeners[0].allowedRoutes.namespaces.selector: required when from is Selector"),
    (_route("[{matches: [{path: {type: Exact, value: /a/../b}}]}]"),
     "spec.rules[0].matches[0].path.value: '/a/../b' must not contain '/../'"),
    (_route("[{matches: [{path: {value: /a%2fb}}]}]"),
     "must not contain '%2f'"),
    (_route("[{matches: [{path: {value: '/a b'}}]}]"),
     "'/a b' contains characters that are not allowed in a path"),
    (_route("[{matches: [{headers: [{name: 'x y', value: z}]}]}]"),
     "spec.rules[0].matches[0].headers[0].name: 'x y' is not a valid name"),
    (_route("[{matches: [{queryParams: [{name: q, type: RegularExpression, value: '('}]}]}]"),
     "spec.rules[0].matches[0].queryParams[0].value: invalid regular expression"),
    (_route("[{matches: [{headers: [{name: x}]}]}]"),
     "spec.rules[0].matches[0].headers[0].value: required field is missing"),
    (_route("[{backendRefs: [{name: web, port: 80, weight: -1}]}]"),
     "spec.rules[0].backendRefs[0].weight: expected int >= 0"),
    (_route("[{timeouts: {request: 1s, backendRequest: 2s}}]"),
     "spec.rules[0].timeouts.backendRequest: must not be longer than the request timeout"),
    (_route("[{name: a}, {name: a}]"),
     "spec.rules[1].name: rule name 'a' is used twice"),
    (_route("[]", "hostnames: ['*.Example.com']"),
     "spec.hostnames[0]: '*.Example.com' is not a valid hostname"),
    ("{apiVersion: v1, kind: Service, metadata: {name: s}, spec: {type: ExternalName}}",
     "spec.externalName: required for type ExternalName"),
    ("{apiVersion: v1, kind: Service, metadata: {name: s}, spec: {ports: [{port: 80}, {port: 81}]}}",
     "spec.ports: every port needs a name when there is more than one"),
    ("{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s},"
     " addressType: IPv4, endpoints: [{addresses: []}]}",
     "endpoints[0].addresses: must have at least one address"),
    ("{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s}}",
     "addressType: required field is missing"),
])
def test_validation_parse_rejects_with_the_field_named(text, reason):
    with pytest.raises(validation.Invalid) as caught:
        _parse(text)
    assert reason in str(caught.value)


@pytest.mark.parametrize("text, ms", [("0s", 0), ("500ms", 500), ("10s", 10_000),
                                      ("1m30s", 90_000), ("1h", 3_600_000), ("1h1m1s1ms", 3_661_001)])
def test_validation_duration_ms_reads_gateway_api_durations(text, ms):
    assert validation.duration_ms(text) == ms
