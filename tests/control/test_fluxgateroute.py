"""FluxGateRoute: validation, canary rules, requestHeaders, retries, attachment."""

from __future__ import annotations

import re

import pytest

from control.objects.raw import KObject
from control.objects import validation
from control.translate import translate
from control.translate.fluxgateroute import CANARY_INDEX, cookie_pattern, split
from control import ir

import yaml

OBJECTS = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: fluxgate
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: next}
spec: {ports: [{port: 80}]}
"""


def _route(rule: str, name: str = "r") -> str:
    return f"""
---
apiVersion: fluxgate.io/v1alpha3
kind: FluxGateRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /app}}}}]
    backendRefs: [{{name: web, port: 80}}]
{rule}
"""


def _translate(parse, rule: str):
    t = translate(parse(OBJECTS + _route(rule)))
    route = next((x for x in t.ir.routes if x.kind == "FluxGateRoute"), None)
    parent = t.status.find("FluxGateRoute", "default", "r").parents[0]
    return route, parent


def _cond(parent, type_):
    c = parent.get(type_)
    return (c.status, c.reason, c.message) if c else None


def test_canary_by_header_ranks_a_header_rule_above_the_main(parse):
    route, parent = _translate(parse, "    canary: {backendRefs: [{name: next, port: 80}], header: {name: X-Canary, value: 'on'}}")
    assert _cond(parent, "Accepted")[0] == "True"
    main, canary = route.rules
    assert (main.index, canary.index) == (0, CANARY_INDEX)
    assert [b.cluster for b in main.backends] == ["default/web:80"]  # weight 0: no split
    assert [b.cluster for b in canary.backends] == ["default/next:80"]
    (match,) = canary.matches
    assert match.path == main.matches[0].path
    assert match.headers == (ir.HeaderMatch(name="x-canary", value="on"),)


def test_canary_header_without_value_matches_any_value(parse):
    route, _ = _translate(parse, "    canary: {backendRefs: [{name: next, port: 80}], header: {name: X-Beta}}")
    assert route.rules[1].matches[0].headers == (
        ir.HeaderMatch(name="x-beta", value=".*", type="RegularExpression"),)


def test_canary_by_cookie(parse):
    route, _ = _translate(parse, "    canary: {backendRefs: [{name: next, port: 80}], cookie: {name: tier, value: b.1}}")
    (header,) = route.rules[1].matches[0].headers
    assert (header.name, header.type) == ("cookie", "RegularExpression")
    pattern = re.compile(header.value)
    assert pattern.fullmatch("tier=b.1")
    assert pattern.fullmatch("a=1; tier=b.1; c=2")
    assert not pattern.fullmatch("a=1; tier=bx1")  # the dot is escaped
    assert not pattern.fullmatch("xtier=b.1")
    assert not pattern.fullmatch("tier=b.12")
    assert header.value == cookie_pattern("tier", "b.1")


def test_canary_header_and_cookie_are_alternatives(parse):
    route, _ = _translate(parse, "    canary: {backendRefs: [{name: next, port: 80}], weight: 5,"
                                 " header: {name: X-C}, cookie: {name: c, value: '1'}}")
    assert [m.headers[0].name for m in route.rules[1].matches] == ["x-c", "cookie"]


def test_canary_by_weight_splits_the_main_rule(parse):
    route, _ = _translate(parse, "    canary: {backendRefs: [{name: next, port: 80}], weight: 20}")
    (main,) = route.rules  # no header or cookie: no extra rule
    assert [(b.cluster, b.weight) for b in main.backends] == [("default/web:80", 4), ("default/next:80", 1)]


@pytest.mark.parametrize("main, canary, percent, expected", [
    ((3,), (1,), 25, (3, 1)),
    ((1, 1), (1,), 50, (1, 1, 2)),
    ((1,), (1, 3), 100, (0, 1, 3)),
    ((1,), (1,), 0, (1,)),
])
def test_split_keeps_each_side_proportional(main, canary, percent, expected):
    backends = split(tuple(ir.Backend(cluster=f"m{i}", weight=w) for i, w in enumerate(main)),
                     tuple(ir.Backend(cluster=f"c{i}", weight=w) for i, w in enumerate(canary)), percent)
    assert tuple(b.weight for b in backends) == expected


def test_header_template_becomes_a_template_filter_after_the_modifier(parse):
    route, parent = _translate(parse, "    requestHeaders: [{name: X-Client, value: 'ip=%{client_ip}'},"
                                      " {name: X-Env, value: prod}]")
    assert route.rules[0].filters == (
        ir.RequestHeaderModifier(set=(ir.HeaderValue(name="X-Env", value="prod"),)),
        ir.RequestHeaderTemplate(set=(ir.HeaderValue(name="X-Client", value="ip=%{client_ip}"),)),
    )
    assert _cond(parent, "Accepted")[0] == "True"
    assert _cond(parent, "PartiallyInvalid") is None


def test_template_parts_split_text_and_placeholders():
    from control.compile import template_parts
    from shm.schema import TemplatePart as P

    assert template_parts("%{client_ip}, seg=%{path_segment:2} h=%{header:X-Ab}!") == (
        P("client_ip", ""), P("text", ", seg="), P("path_segment", "2"), P("text", " h="),
        P("header", "x-ab"), P("text", "!"))


def test_request_header_named_in_the_rules_modifier_drops_the_rule(parse):
    route, parent = _translate(parse, "    filters: [{type: RequestHeaderModifier, requestHeaderModifier:"
                                      " {remove: [X-Client]}}]\n"
                                      "    requestHeaders: [{name: x-client, value: '%{client_ip}'}]")
    assert route is None
    assert "'x-client' is also in the rule's RequestHeaderModifier" in _cond(parent, "Accepted")[2]


def test_plain_request_headers_become_a_header_modifier(parse):
    route, parent = _translate(parse, "    requestHeaders: [{name: X-Env, value: prod}]")
    assert route.rules[0].filters == (
        ir.RequestHeaderModifier(set=(ir.HeaderValue(name="X-Env", value="prod"),)),)
    assert _cond(parent, "PartiallyInvalid") is None


@pytest.mark.parametrize("retry_on, codes, connect, reset", [
    ("[5xx]", tuple(range(500, 600)), False, False),
    ("[gateway-error, connect-failure]", (502, 503, 504), True, False),
    ("[retriable-4xx, reset]", (409,), False, True),
])
def test_retries_become_a_retry_policy(parse, retry_on, codes, connect, reset):
    route, parent = _translate(parse, f"    retries: {{attempts: 2, retryOn: {retry_on}, backoff: 25ms}}")
    assert route.rules[0].retry == ir.Retry(attempts=2, codes=codes, connect_failure=connect,
                                            reset=reset, backoff_ms=25)
    assert _cond(parent, "PartiallyInvalid") is None


def test_canary_rule_shares_the_retry_policy(parse):
    route, _ = _translate(parse, "    canary: {backendRefs: [{name: next, port: 80}], header: {name: X-C}}\n"
                                 "    retries: {attempts: 1, retryOn: [reset]}")
    assert [r.retry.attempts for r in route.rules] == [1, 1]


def test_attaches_like_an_httproute(parse):
    t = translate(parse(OBJECTS + _route("")))
    (listener,) = t.ir.listeners
    assert [a.route for a in listener.attachments] == ["FluxGateRoute/default/r"]


def _invalid(text: str) -> str:
    doc = yaml.safe_load(_route(text).lstrip("-\n"))
    with pytest.raises(validation.Invalid) as exc:
        validation.parse(KObject(doc, "t.yaml", 1))
    return str(exc.value)


@pytest.mark.parametrize("rule, expected", [
    ("    canary: {backendRefs: [{name: next, port: 80}], weight: 101}", "spec.rules[0].canary.weight"),
    ("    canary: {backendRefs: [{name: next, port: 80}]}", "spec.rules[0].canary: set a weight"),
    ("    canary: {backendRefs: [], weight: 5}", "spec.rules[0].canary.backendRefs: must have"),
    ("    canary: {backendRefs: [{name: next}], weight: 5}", "canary.backendRefs[0].port: required"),
    ("    canary: {backendRefs: [{name: next, port: 80}], cookie: {name: 'a b', value: x}}",
     "canary.cookie.name"),
    ("    canary: {backendRefs: [{name: next, port: 80}], cookie: {name: a, value: 'x;y'}}",
     "canary.cookie.value"),
    ("    requestHeaders: [{name: X-A, value: '%{nope}'}]", "unknown placeholder %{nope}"),
    ("    requestHeaders: [{name: X-A, value: '%{path_segment:0}'}]", "unknown placeholder %{path_segment:0}"),
    ("    requestHeaders: [{name: Host, value: '%{client_ip}'}]", "'Host' is set by the proxy itself"),
    ("    requestHeaders: [{name: X-Forwarded-For, value: x}]", "is set by the proxy itself"),
    ("    requestHeaders: [{name: 'bad name', value: x}]", "requestHeaders[0].name"),
    ("    requestHeaders: [{name: X-A, value: a}, {name: x-a, value: b}]", "named twice"),
    ("    retries: {attempts: 11, retryOn: [5xx]}", "spec.rules[0].retries.attempts"),
    ("    retries: {attempts: 1, retryOn: [sometimes]}", "retryOn[0]: invalid enum value"),
    ("    retries: {attempts: 1}", "retries.retryOn: must have at least one entry"),
    ("    retries: {attempts: 1, retryOn: [reset], backoff: soon}", "retries.backoff: 'soon' is not a duration"),
    ("    retries: {attempts: 1, retryOn: [reset]}\n    retry: {codes: [503]}", "set retry (Gateway API) or retries"),
])
def test_validation_errors(rule, expected):
    assert expected in _invalid(rule)


def test_known_placeholders_are_valid():
    doc = yaml.safe_load(_route(
        "    requestHeaders: [{name: X-A, value: '%{client_ip} %{request_id} %{header:X-B} %{path_segment:2}'}]"
    ).lstrip("-\n"))
    validation.parse(KObject(doc, "t.yaml", 1))


def test_crd_schema_matches_the_types():
    from pathlib import Path

    from control.objects import resources as r

    crd = yaml.safe_load((Path(__file__).parents[2] / "deploy/crds/fluxgateroute.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    assert (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"]) == (
        "fluxgate.io", "v1alpha3", "FluxGateRoute")
    assert ("fluxgate.io/v1alpha3", "FluxGateRoute") in validation.KINDS
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    rule = spec["rules"]["items"]["properties"]
    assert set(rule) == {"name", "matches", "filters", "backendRefs", "timeouts", "retry",
                         "canary", "requestHeaders", "retries"}
    assert set(rule["retries"]["properties"]) == {"attempts", "retryOn", "backoff"}
    assert tuple(rule["retries"]["properties"]["retryOn"]["items"]["enum"]) == r.RETRY_ON
    assert rule["canary"]["properties"]["weight"]["maximum"] == 100


def test_listener_kinds_can_select_fluxgateroute_alone(parse):
    only_ours = OBJECTS.replace(
        "listeners: [{name: http, port: 80, protocol: HTTP}]",
        "listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{group: fluxgate.io, kind: FluxGateRoute}]}}]")
    http_route = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"""
    t = translate(parse(only_ours + _route("") + http_route))
    assert [r.kind for r in t.ir.routes] == ["FluxGateRoute"]
    listener = t.status.find("Gateway", "default", "gw").listener("http")
    assert [(k.group, k.kind) for k in listener.supported_kinds] == [("fluxgate.io", "FluxGateRoute")]
    rejected = t.status.find("HTTPRoute", "default", "h").parents[0].get("Accepted")
    assert (rejected.status, rejected.reason) == ("False", "NotAllowedByListeners")
