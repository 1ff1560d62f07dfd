"""Ingress and IngressClass: classes, paths, backends, defaultBackend, annotations, status."""

from __future__ import annotations

import pytest
import yaml

from control import ir
from control.cache import ObjectCache
from control.compile import compile_table
from control.objects.raw import KObject
from control.sources.files import Loaded
from control.objects import resources as r
from control.objects import validation
from control.translate import translate

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80}, {name: admin, port: 9000}]}
---
apiVersion: v1
kind: Service
metadata: {name: canary}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: other}
spec: {ports: [{port: 80}]}
"""


def _ingress(spec: str, name: str = "web", annotations: str = "{}", created: str = "") -> str:
    stamp = f", creationTimestamp: '{created}'" if created else ""
    return f"""
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, annotations: {annotations}{stamp}}}
spec:
{spec}
"""


def _class(name: str = "fluxgate", controller: str = "fluxgate.io/ingress-controller",
           default: bool = False, extra: str = "") -> str:
    ann = "{ingressclass.kubernetes.io/is-default-class: 'true'}" if default else "{}"
    return f"""
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: {name}, annotations: {ann}}}
spec: {{controller: {controller}{extra}}}
"""


def _rule(path: str = "/", path_type: str = "Prefix", backend: str = "web", port: str = "{number: 80}",
          host: str = "") -> str:
    host_line = f"host: '{host}', " if host else ""
    return (f"  - {{{host_line}http: {{paths: [{{path: '{path}', pathType: {path_type},"
            f" backend: {{service: {{name: {backend}, port: {port}}}}}}}]}}}}\n")


def _spec(*rules: str, cls: str = "fluxgate", extra: str = "") -> str:
    lines = f"  ingressClassName: {cls}\n" if cls else ""
    if rules:
        lines += "  rules:\n" + "".join(rules)
    return lines + extra


DEFAULT_BACKEND = "  defaultBackend: {service: {name: other, port: {number: 80}}}\n"


def _cond(result, type_, name="web", kind="Ingress", namespace="default"):
    status = result.status.find(kind, namespace if kind == "Ingress" else "", name)
    cond = status.get(type_)
    return (cond.status, cond.reason) if cond else None


def _routes(result) -> dict[str, object]:
    return {route.ref: route for route in result.ir.routes}


def _entries(result, host="*", port=80):
    """(source, path, headers, backends) of each entry of a vhost, in precedence order."""
    table = compile_table(result.ir)
    vhost = next(v for v in table.vhosts if v.name == f":{port}|{host}")
    return [(e.source, e.match.path.value, tuple((h.name, h.value) for h in e.match.headers),
             tuple((b.cluster, b.weight) for b in vhost.actions[e.action].backends))
            for e in vhost.entries]


# --- classes -----------------------------------------------------------------------


def test_ingress_named_fluxgate_is_served_in_file_mode_without_an_ingressclass(parse):
    result = translate(parse(SERVICES + _ingress(_spec(_rule()))))
    assert _cond(result, "Accepted") == ("True", "Accepted")
    (listener,) = result.ir.listeners
    assert (listener.name, listener.port, listener.addresses, listener.programmed) == (
        "ingress-http", 80, ("",), True)
    assert [a.route for a in listener.attachments] == ["Ingress/default/web"]


def test_ingress_without_its_ingressclass_is_ignored_in_kubernetes_mode(parse):
    result = translate(parse(SERVICES + _ingress(_spec(_rule()))), default_class=None)
    assert not result.ir.listeners and result.status.find("Ingress", "default", "web") is None
    assert any("IngressClass 'fluxgate' is not handled" in n for n in result.status.notes)
    result = translate(parse(SERVICES + _class() + _ingress(_spec(_rule()))), default_class=None)
    assert _cond(result, "Accepted") == ("True", "Accepted")
    assert _cond(result, "Accepted", "fluxgate", "IngressClass") == ("True", "Accepted")


def test_ingress_of_another_controller_gets_no_status(parse):
    objects = parse(SERVICES + _class("nginx", "k8s.io/ingress-nginx")
                    + _ingress(_spec(_rule(), cls="nginx")))
    result = translate(objects)
    assert result.status.find("Ingress", "default", "web") is None
    assert result.status.find("IngressClass", "", "nginx") is None
    assert not result.ir.listeners


def test_ingress_without_class_uses_our_default_ingressclass(parse):
    objects = parse(SERVICES + _class("internal", default=True) + _ingress(_spec(_rule(), cls="")))
    assert _cond(translate(objects, default_class=None), "Accepted") == ("True", "Accepted")
    # Without a default, a class-less Ingress is nobody's, even in file mode.
    result = translate(parse(SERVICES + _class("internal") + _ingress(_spec(_rule(), cls=""))))
    assert result.status.find("Ingress", "default", "web") is None


def test_ingress_default_class_shared_with_another_controller_is_ambiguous(parse):
    objects = parse(SERVICES + _class("internal", default=True)
                    + _class("nginx", "k8s.io/ingress-nginx", default=True)
                    + _ingress(_spec(_rule(), cls="")))
    result = translate(objects)
    assert result.status.find("Ingress", "default", "web") is None
    assert any("all marked default" in n for n in result.status.notes)


def test_ingress_legacy_class_annotation_is_honoured(parse):
    ours = _ingress(_spec(_rule(), cls=""), annotations="{kubernetes.io/ingress.class: fluxgate}")
    assert _cond(translate(parse(SERVICES + ours)), "Accepted") == ("True", "Accepted")
    theirs = _ingress(_spec(_rule(), cls=""), annotations="{kubernetes.io/ingress.class: nginx}")
    result = translate(parse(SERVICES + _class("d", default=True) + theirs))
    assert result.status.find("Ingress", "default", "web") is None


def test_ingressclass_with_parameters_rejects_its_ingresses(parse):
    params = ", parameters: {apiGroup: example.com, kind: Config, name: x}"
    result = translate(parse(SERVICES + _class(extra=params) + _ingress(_spec(_rule()))))
    assert _cond(result, "Accepted", "fluxgate", "IngressClass") == ("False", "InvalidParameters")
    assert _cond(result, "Accepted") == ("False", "InvalidIngressClass")
    assert not result.ir.listeners


# --- paths, hosts, backends ----------------------------------------------------------


def test_ingress_path_types_map_to_gateway_api_matches(parse):
    spec = _spec(_rule("/exact", "Exact"), _rule("/prefix/", "Prefix"),
                 _rule("/impl", "ImplementationSpecific"), _rule("", "ImplementationSpecific"))
    (route,) = translate(parse(SERVICES + _ingress(spec))).ir.routes
    assert [(rule.matches[0].path.type, rule.matches[0].path.value, rule.name) for rule in route.rules] == [
        ("Exact", "/exact", "spec.rules[0].http.paths[0]"),
        ("PathPrefix", "/prefix/", "spec.rules[1].http.paths[0]"),
        ("PathPrefix", "/impl", "spec.rules[2].http.paths[0]"),
        ("PathPrefix", "/", "spec.rules[3].http.paths[0]"),
    ]


def test_ingress_gives_one_route_per_host(parse):
    spec = _spec(_rule("/a", host="a.example.com"), _rule("/b", host="*.example.com"),
                 _rule("/c", host="a.example.com"), _rule("/d"))
    result = translate(parse(SERVICES + _ingress(spec)))
    routes = _routes(result)
    assert sorted(routes) == ["Ingress/default/web", "Ingress/default/web (*.example.com)",
                              "Ingress/default/web (a.example.com)"]
    assert [r.index for r in routes["Ingress/default/web (a.example.com)"].rules] == [0, 2]
    hosts = {a.route: a.hostnames for a in result.ir.listeners[0].attachments}
    # An Ingress wildcard covers exactly one label: the IR says so with "+.".
    assert hosts["Ingress/default/web (*.example.com)"] == ("+.example.com",)
    assert hosts["Ingress/default/web"] == ("*",)


def test_ingress_backend_port_by_name_resolves_through_the_service(parse):
    spec = _spec(_rule("/a", port="{name: admin}"), _rule("/b", port="{name: nope}"),
                 _rule("/c", backend="missing"))
    result = translate(parse(SERVICES + _ingress(spec)))
    clusters = [rule.backends[0].cluster for rule in result.ir.routes[0].rules]
    assert clusters == ["default/web:9000", "", ""]
    status = result.status.find("Ingress", "default", "web").get("ResolvedRefs")
    assert (status.status, status.reason) == ("False", "BackendNotFound")
    assert "spec.rules[1].http.paths[0].backend: Service default/web has no port named 'nope'" in status.message
    assert "spec.rules[2].http.paths[0].backend: Service default/missing not found" in status.message
    assert _cond(result, "Accepted") == ("True", "Accepted")


def test_ingress_resource_backend_is_rejected_with_a_reason(parse):
    spec = _spec(_rule()) + ("  defaultBackend: {resource: {apiGroup: k8s.example.com,"
                             " kind: StorageBucket, name: assets}}\n")
    result = translate(parse(SERVICES + _ingress(spec)))
    status = result.status.find("Ingress", "default", "web").get("ResolvedRefs")
    assert (status.status, status.reason) == ("False", "InvalidKind")
    assert "resource backends are not supported (k8s.example.com/StorageBucket assets)" in status.message


def test_ingress_http_port_is_a_translate_parameter(parse):
    result = translate(parse(SERVICES + _ingress(_spec(_rule()))), ingress_http_port=8080)
    assert result.ir.listeners[0].port == 8080
    assert compile_table(result.ir).listeners[0].name == ":8080"


def test_ingress_and_gateway_on_one_port_share_a_socket(parse):
    gateway = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec: {gatewayClassName: fluxgate, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gw}]
  rules: [{matches: [{path: {type: PathPrefix, value: /route}}], backendRefs: [{name: other, port: 80}]}]
"""
    result = translate(parse(SERVICES + gateway + _ingress(_spec(_rule("/ingress")))))
    table = compile_table(result.ir)
    assert len(table.listeners) == 1
    # One vhost, one precedence order: the longer prefix first, whatever its source.
    assert [e[0] for e in _entries(result)] == ["Ingress/default/web#0", "HTTPRoute/default/web#0"]


def test_translate_without_ingresses_adds_no_listener(parse):
    result = translate(parse(SERVICES))
    assert result.ir.listeners == () and result.ir.routes == ()


# --- defaultBackend ------------------------------------------------------------------


def test_ingress_default_backend_catches_every_host_and_loses_to_every_rule(parse):
    spec = _spec(_rule("/", host="a.example.com"), _rule("/api", host="b.example.com"),
                 _rule("/x")) + DEFAULT_BACKEND
    result = translate(parse(SERVICES + _ingress(spec)))
    hosts = {a.route: a.hostnames for a in result.ir.listeners[0].attachments}
    # a.example.com has its own "/" prefix: the catch-all would never be chosen there.
    assert hosts["Ingress/default/web (defaultBackend)"] == ("*", "b.example.com")
    assert [e[0] for e in _entries(result, "b.example.com")] == [
        "Ingress/default/web (b.example.com)#1", "Ingress/default/web (defaultBackend)#0"]
    assert [e[0] for e in _entries(result)] == [
        "Ingress/default/web#2", "Ingress/default/web (defaultBackend)#0"]


def test_ingress_default_backend_loses_to_a_root_rule_of_another_ingress(parse):
    objects = parse(SERVICES + _ingress(DEFAULT_BACKEND + "  ingressClassName: fluxgate\n", name="a")
                    + _ingress(_spec(_rule("/")), name="b"))
    result = translate(objects)
    assert [e[0] for e in _entries(result)] == ["Ingress/default/b#0"]
    assert _cond(result, "Programmed", "a") == ("False", "Shadowed")


def test_ingress_default_backend_also_covers_httproute_hosts_on_its_socket(parse):
    gateway = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec: {gatewayClassName: fluxgate, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: gw}]
  hostnames: [api.example.com]
  rules: [{matches: [{path: {type: PathPrefix, value: /v1}}], backendRefs: [{name: other, port: 80}]}]
"""
    spec = _spec(_rule("/x", host="a.example.com")) + DEFAULT_BACKEND
    result = translate(parse(SERVICES + gateway + _ingress(spec)))
    assert [e[0] for e in _entries(result, "api.example.com")] == [
        "HTTPRoute/default/api#0", "Ingress/default/web (defaultBackend)#0"]
    other_port = translate(parse(SERVICES + gateway + _ingress(spec)), ingress_http_port=8080)
    hosts = {a.route: a.hostnames for lst in other_port.ir.listeners for a in lst.attachments}
    assert hosts["Ingress/default/web (defaultBackend)"] == ("*", "a.example.com")


def test_ingress_oldest_default_backend_wins(parse):
    objects = parse(SERVICES
                    + _ingress(DEFAULT_BACKEND + _spec(_rule("/n")), name="new", created="2024-02-01T00:00:00Z")
                    + _ingress(DEFAULT_BACKEND + _spec(), name="old", created="2024-01-01T00:00:00Z"))
    result = translate(objects)
    assert "Ingress/default/old (defaultBackend)" in _routes(result)
    assert "Ingress/default/new (defaultBackend)" not in _routes(result)
    assert _cond(result, "PartiallyInvalid", "new") == ("True", "DefaultBackendConflict")
    assert _cond(result, "Accepted", "new") == ("True", "Accepted")
    # An Ingress with nothing but a losing defaultBackend serves nothing.
    objects = parse(SERVICES
                    + _ingress(DEFAULT_BACKEND + _spec(), name="b", created="2024-02-01T00:00:00Z")
                    + _ingress(DEFAULT_BACKEND + _spec(), name="a", created="2024-03-01T00:00:00Z"))
    result = translate(objects)
    assert _cond(result, "Accepted", "a") == ("False", "DefaultBackendConflict")
    assert _cond(result, "Accepted", "b") == ("True", "Accepted")


# --- annotations ---------------------------------------------------------------------


def test_ingress_rewrite_target_is_a_urlrewrite_of_the_matched_path(parse):
    spec = _spec(_rule("/api"), _rule("/exact", "Exact"))
    result = translate(parse(SERVICES + _ingress(spec, annotations="{fluxgate.io/rewrite-target: /v2}")))
    prefix, exact = result.ir.routes[0].rules
    assert prefix.filters == (ir.URLRewrite(path=ir.PathModifier(type="ReplacePrefixMatch", value="/v2")),)
    assert exact.filters == (ir.URLRewrite(path=ir.PathModifier(type="ReplaceFullPath", value="/v2")),)
    compile_table(result.ir)  # compile understands both


def test_ingress_ssl_redirect_redirects_every_route_to_https(parse):
    spec = _spec(_rule("/a"), _rule("/b", host="b.example.com")) + DEFAULT_BACKEND
    result = translate(parse(SERVICES + _ingress(spec, annotations="{fluxgate.io/ssl-redirect: 'true'}")))
    for route in result.ir.routes:
        for rule in route.rules:
            assert rule.filters == (ir.RequestRedirect(scheme="https", status_code=301),)
            assert rule.backends == ()
    assert result.ir.clusters == ()
    compile_table(result.ir)


@pytest.mark.parametrize("annotations, reason", [
    ("{fluxgate.io/ssl-redirect: 'yes'}", "metadata.annotations[fluxgate.io/ssl-redirect]: 'yes' must be"),
    ("{fluxgate.io/rewrite-target: v2}", "metadata.annotations[fluxgate.io/rewrite-target]: 'v2' must start"),
    ("{fluxgate.io/canary: 'true', fluxgate.io/canary-weight: '101'}", "not a whole number from 0 to 100"),
    ("{fluxgate.io/canary: 'true', fluxgate.io/canary-weight: '-1'}", "not a whole number from 0 to 100"),
    ("{fluxgate.io/canary: 'true', fluxgate.io/canary-by-header: 'x y'}", "not a valid header name"),
    ("{fluxgate.io/canary: 'true', fluxgate.io/canary-by-header-value: v}", "needs fluxgate.io/canary-by-header"),
    ("{fluxgate.io/rewrite-targt: /}", "metadata.annotations[fluxgate.io/rewrite-targt]: unknown annotation"),
])
def test_ingress_invalid_annotation_rejects_only_that_ingress(parse, annotations, reason):
    objects = parse(SERVICES + _ingress(_spec(_rule("/bad")), annotations=annotations)
                    + _ingress(_spec(_rule("/good")), name="good"))
    result = translate(objects)
    status = result.status.find("Ingress", "default", "web").get("Accepted")
    assert (status.status, status.reason) == ("False", "InvalidAnnotation")
    assert reason in status.message
    assert list(_routes(result)) == ["Ingress/default/good"]


def test_ingress_annotations_of_the_wrong_role_are_ignored_with_a_note(parse):
    main = _ingress(_spec(_rule()), annotations="{fluxgate.io/canary-weight: '10'}")
    canary = _ingress(_spec(_rule(backend="canary", port="{number: 8080}")), name="c",
                      annotations="{fluxgate.io/canary: 'true', fluxgate.io/rewrite-target: /x}")
    result = translate(parse(SERVICES + main + canary))
    notes = "\n".join(result.status.notes)
    assert "Ingress default/web: fluxgate.io/canary-weight ignored" in notes
    assert "Ingress default/c: fluxgate.io/rewrite-target ignored on a canary Ingress" in notes
    assert result.ir.routes[0].rules[0].filters == ()


# --- canaries ------------------------------------------------------------------------

CANARY_BACKEND = "{number: 8080}"


def _canary(annotations: str, *rules: str, name: str = "canary", created: str = "") -> str:
    rules = rules or (_rule("/", backend="canary", port=CANARY_BACKEND),)
    return _ingress(_spec(*rules), name=name, created=created,
                    annotations="{fluxgate.io/canary: 'true', " + annotations + "}")


def test_ingress_canary_weight_splits_the_main_rule(parse):
    objects = parse(SERVICES + _ingress(_spec(_rule("/")))
                    + _canary("fluxgate.io/canary-weight: '20'",
                              _rule("/", "ImplementationSpecific", "canary", CANARY_BACKEND)))
    result = translate(objects)
    assert list(_routes(result)) == ["Ingress/default/web"]  # a canary has no route of its own
    assert _entries(result) == [
        ("Ingress/default/web#0", "/", (), (("default/web:80", 80), ("default/canary:8080", 20)))]
    assert _cond(result, "Accepted", "canary") == ("True", "Accepted")
    assert _cond(result, "Programmed", "canary") == ("True", "Programmed")


def test_ingress_several_canaries_share_a_main_until_100(parse):
    objects = parse(SERVICES + _ingress(_spec(_rule("/")))
                    + _canary("fluxgate.io/canary-weight: '30'", name="c1", created="2024-01-01T00:00:00Z")
                    + _canary("fluxgate.io/canary-weight: '70'", name="c2", created="2024-01-02T00:00:00Z")
                    + _canary("fluxgate.io/canary-weight: '1'", name="c3", created="2024-01-03T00:00:00Z"))
    result = translate(objects)
    (entry,) = _entries(result)
    assert entry[3] == (("default/web:80", 0), ("default/canary:8080", 30), ("default/canary:8080", 70))
    assert _cond(result, "Accepted", "c3") == ("False", "CanaryWeightExceeded")


def test_ingress_canary_by_header_ranks_above_the_main(parse):
    objects = parse(SERVICES + _ingress(_spec(_rule("/api/"), _rule("/exact", "Exact")),
                                        annotations="{fluxgate.io/rewrite-target: /}")
                    + _canary("fluxgate.io/canary-by-header: X-Canary",
                              _rule("/api", backend="canary", port=CANARY_BACKEND), name="c1")
                    + _canary("fluxgate.io/canary-by-header: X-Canary, fluxgate.io/canary-by-header-value: v2",
                              _rule("/exact", "Exact", "canary", CANARY_BACKEND), name="c2"))
    result = translate(objects)
    assert _entries(result) == [
        ("Ingress/default/web#4", "/exact", (("x-canary", "v2"),), (("default/canary:8080", 1),)),
        ("Ingress/default/web#1", "/exact", (), (("default/web:80", 1),)),
        ("Ingress/default/web#3", "/api", (("x-canary", ".*"),), (("default/canary:8080", 1),)),
        ("Ingress/default/web#0", "/api", (), (("default/web:80", 1),)),
    ]
    rules = {rule.index: rule for rule in result.ir.routes[0].rules}
    assert rules[3].matches[0].headers[0].type == "RegularExpression"
    assert rules[4].matches[0].headers[0].type == "Exact"
    # The canary inherits the main's filters.
    assert rules[3].filters == rules[0].filters and rules[4].filters == rules[1].filters


def test_ingress_canary_without_main_is_not_served(parse):
    objects = parse(SERVICES + _ingress(_spec(_rule("/a")))
                    + _canary("fluxgate.io/canary-weight: '50'",
                              _rule("/a", backend="canary", port=CANARY_BACKEND),
                              _rule("/b", backend="canary", port=CANARY_BACKEND)))
    result = translate(objects)
    assert _cond(result, "PartiallyInvalid", "canary") == ("True", "NoMainIngress")
    lonely = translate(parse(SERVICES + _canary("fluxgate.io/canary-weight: '50'")))
    assert _cond(lonely, "Accepted", "canary") == ("False", "NoMainIngress")
    assert lonely.ir.listeners == ()


def test_ingress_canary_pairs_with_the_winning_main(parse):
    objects = parse(SERVICES
                    + _ingress(_spec(_rule("/", backend="other")), name="young", created="2024-02-01T00:00:00Z")
                    + _ingress(_spec(_rule("/")), name="old", created="2024-01-01T00:00:00Z")
                    + _canary("fluxgate.io/canary-weight: '10'"))
    result = translate(objects)
    assert _entries(result) == [
        ("Ingress/default/old#0", "/", (), (("default/web:80", 90), ("default/canary:8080", 10))),
        ("Ingress/default/young#0", "/", (), (("default/other:80", 1),)),
    ]


def test_ingress_canary_of_the_default_backend(parse):
    objects = parse(SERVICES + _ingress(DEFAULT_BACKEND + _spec())
                    + _ingress("  ingressClassName: fluxgate\n"
                               "  defaultBackend: {service: {name: canary, port: {number: 8080}}}\n",
                               name="canary", annotations="{fluxgate.io/canary: 'true',"
                               " fluxgate.io/canary-weight: '5', fluxgate.io/canary-by-header: x-c}"))
    result = translate(objects)
    assert _entries(result) == [
        ("Ingress/default/web (defaultBackend)#1", "/", (("x-c", ".*"),), (("default/canary:8080", 1),)),
        ("Ingress/default/web (defaultBackend)#0", "/", (),
         (("default/other:80", 95), ("default/canary:8080", 5))),
    ]


# --- TLS, status -----------------------------------------------------------------------


def test_ingress_tls_is_recorded_but_not_programmed(parse):
    spec = _spec(_rule("/", host="a.example.com"), _rule("/", host="b.example.com"),
                 extra="  tls: [{hosts: [a.example.com], secretName: a-tls}]\n")
    result = translate(parse(SERVICES + _ingress(spec)))
    http, https = result.ir.listeners
    assert (https.name, https.port, https.protocol, https.programmed) == ("ingress-https", 443, "HTTPS", False)
    assert [a.route for a in https.attachments] == ["Ingress/default/web (a.example.com)"]
    assert _cond(result, "TLSProgrammed") == ("False", "Pending")
    assert _cond(result, "Programmed") == ("True", "Programmed")
    assert [(lst.port, lst.protocol) for lst in compile_table(result.ir).listeners] == [(80, "HTTP")]


def test_ingress_status_lines_read_well(parse):
    spec = _spec(_rule(backend="missing"))
    lines = translate(parse(SERVICES + _class() + _ingress(spec))).status.lines()
    assert "IngressClass fluxgate: Accepted=True" in lines
    assert any(line.startswith("Ingress default/web: Accepted=True ResolvedRefs=False (BackendNotFound:")
               for line in lines)


def test_ingress_translation_ignores_object_order(parse):
    objects = parse(SERVICES + _ingress(_spec(_rule("/"), _rule("/x", host="a.example.com")) + DEFAULT_BACKEND)
                    + _ingress(DEFAULT_BACKEND + _spec(_rule("/y")), name="b")
                    + _canary("fluxgate.io/canary-weight: '5', fluxgate.io/canary-by-header: x"))
    forward, backward = translate(objects), translate(list(reversed(objects)))
    assert forward.ir == backward.ir and forward.status == backward.status


# --- resources and validation ----------------------------------------------------------


def _parse(text: str) -> r.Resource:
    return validation.parse(KObject(yaml.safe_load(text), "t.yaml", 1))


def test_ingress_keeps_only_the_annotations_fluxgate_reads():
    ing = _parse(_ingress(_spec(_rule()), annotations="{a.example.com/x: '1', fluxgate.io/canary: 'false',"
                                                       " kubernetes.io/ingress.class: fluxgate}").lstrip("-\n"))
    assert isinstance(ing, r.Ingress)
    assert ing.annotations == {"fluxgate.io/canary": "false", "kubernetes.io/ingress.class": "fluxgate"}
    ic = _parse(_class(default=True).lstrip("-\n"))
    assert isinstance(ic, r.IngressClass) and ic.key == ("IngressClass", "", "fluxgate") and ic.is_default


def test_ingress_unrelated_annotation_change_is_no_change():
    def load(annotations: str) -> Loaded:
        doc = yaml.safe_load(_ingress(_spec(_rule()), annotations=annotations).lstrip("-\n"))
        return Loaded(objects=[KObject(doc, "a.yaml", 1)], files=["a.yaml"])

    cache = ObjectCache()
    assert cache.apply(load("{last-applied: '1'}"))
    assert not cache.apply(load("{last-applied: '2'}"))
    assert cache.apply(load("{fluxgate.io/ssl-redirect: 'true'}"))


def _bad_ingress(spec: str, annotations: str = "{}") -> str:
    return _ingress(spec, annotations=annotations).lstrip("-\n")


@pytest.mark.parametrize("text, reason", [
    (_bad_ingress("  ingressClassName: fluxgate\n"),
     "spec: either `defaultBackend` or `rules` must be specified"),
    (_bad_ingress("  rules: [{http: {paths: [{path: /, backend: {service: {name: web, port: {number: 80}}}}]}}]"),
     "spec.rules[0].http.paths[0].pathType: required"),
    (_bad_ingress(_spec(_rule("/", "Regex"))),
     "spec.rules[0].http.paths[0].pathType: invalid enum value 'Regex' (expected one of: Exact, ImplementationSpecific, Prefix)"),
    (_bad_ingress(_spec(_rule("api", "Prefix"))),
     "spec.rules[0].http.paths[0].path: 'api' must be an absolute path"),
    (_bad_ingress(_spec(_rule("api", "ImplementationSpecific"))),
     "spec.rules[0].http.paths[0].path: 'api' must be an absolute path"),
    (_bad_ingress(_spec(_rule("", "Exact"))),
     "spec.rules[0].http.paths[0].path: '' must be an absolute path"),
    (_bad_ingress(_spec(_rule("/a//b", "Exact"))), "'/a//b' must not contain '//'"),
    (_bad_ingress(_spec(_rule("/a/..", "Prefix"))), "'/a/..' cannot end with '/..'"),
    (_bad_ingress(_spec(_rule(host="10.0.0.1"))), "spec.rules[0].host: '10.0.0.1' must be a DNS name"),
    (_bad_ingress(_spec(_rule(host="Foo.com"))), "spec.rules[0].host: 'Foo.com' is not a valid DNS subdomain"),
    (_bad_ingress(_spec(_rule(host="a.*.com"))), "spec.rules[0].host: 'a.*.com' is not a valid DNS subdomain"),
    (_bad_ingress(_spec(_rule(port="{}"))), "backend: port name or number is required"),
    (_bad_ingress(_spec(_rule(port="{name: http, number: 80}"))), "backend: cannot set both port name & port number"),
    (_bad_ingress(_spec(_rule(port="{number: 70000}"))), "backend.service.port.number: must be between 1 and 65535"),
    (_bad_ingress(_spec(_rule(port="{name: Http}"))), "backend.service.port.name: 'Http' is not a valid port name"),
    (_bad_ingress(_spec(_rule(backend="Web"))), "backend.service.name: 'Web' is not a valid Service name"),
    (_bad_ingress(_spec() + "  defaultBackend: {}\n"), "spec.defaultBackend: resource or service backend is required"),
    (_bad_ingress(_spec() + "  defaultBackend: {resource: {kind: Bucket}}\n"), "spec.defaultBackend.resource.name: required"),
    (_bad_ingress(_spec() + "  defaultBackend: {service: {name: web, port: {number: 80}},"
                  " resource: {kind: B, name: b}}\n"), "cannot set both resource and service backends"),
    (_bad_ingress(_spec(_rule(), extra="  tls: [{hosts: ['*']}]\n")), "spec.tls[0].hosts[0]: '*' is not a valid"),
    (_bad_ingress(_spec(_rule(), extra="  tls: [{secretName: Bad_Name}]\n")), "spec.tls[0].secretName:"),
    (_bad_ingress(_spec(_rule(), cls="Bad")), "spec.ingressClassName: 'Bad' is not a valid DNS subdomain"),
    (_bad_ingress("  rules: [{http: {paths: []}}]\n"), "spec.rules[0].http.paths: required"),
    (_bad_ingress(_spec(_rule()), annotations="{kubernetes.io/ingress.class: nginx}"),
     "metadata.annotations[kubernetes.io/ingress.class]: 'nginx' must match `ingressClassName`"),
    (_class(controller="fluxgate").lstrip("-\n"),
     "spec.controller: 'fluxgate' must be a domain-prefixed path"),
    (_class(controller="''").lstrip("-\n"), "spec.controller: required"),
    (_class(extra=", parameters: {kind: C, name: c, scope: Namespace}").lstrip("-\n"),
     "spec.parameters.namespace: required when scope is Namespace"),
    (_class(extra=", parameters: {kind: C, name: c, namespace: x}").lstrip("-\n"),
     "spec.parameters.namespace: must not be set when scope is Cluster"),
    (_class(extra=", parameters: {name: c}").lstrip("-\n"), "spec.parameters.kind: required"),
])
def test_ingress_validation_rejects_what_the_api_server_would(text, reason):
    with pytest.raises(validation.Invalid) as exc:
        _parse(text)
    assert reason in str(exc.value)


def test_ingress_validation_accepts_wildcards_and_empty_implementation_specific_paths():
    ing = _parse(_bad_ingress(_spec(_rule("", "ImplementationSpecific", host="*.example.com"),
                                    extra="  tls: [{hosts: ['*.example.com'], secretName: tls}]\n")))
    assert ing.spec.rules[0].host == "*.example.com"


# --- what the data plane's matcher makes of it -------------------------------------------


def _router(result):
    from common.match import HostIndex, PathIndex

    table = compile_table(result.ir)
    (listener,) = table.listeners
    hosts = HostIndex(listener)
    indexes = [PathIndex(vhost, lambda entry: entry) for vhost in table.vhosts]

    def route(host: str, path: str, headers: dict[str, str] | None = None) -> str:
        vhost = hosts.lookup(host.encode())
        if vhost < 0:
            return "404"
        pairs = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        found = indexes[vhost].match(b"GET", path.encode(), pairs, b"")
        return found.source if found else "404"

    return route


def test_ingress_requests_reach_canaries_rules_and_the_catch_all(parse):
    objects = parse(SERVICES
                    + _ingress(_spec(_rule("/app", host="a.example.com")) + DEFAULT_BACKEND)
                    + _canary("fluxgate.io/canary-by-header: X-Canary",
                              _rule("/app", host="a.example.com", backend="canary", port=CANARY_BACKEND),
                              name="c1")
                    + _canary("fluxgate.io/canary-by-header: X-Canary, fluxgate.io/canary-by-header-value: two",
                              _rule("/app", host="a.example.com", backend="canary", port=CANARY_BACKEND),
                              name="c2", created="2024-01-01T00:00:00Z"))
    route = _router(translate(objects))
    main, default = "Ingress/default/web (a.example.com)#0", "Ingress/default/web (defaultBackend)#0"
    assert route("a.example.com", "/app/x") == main
    assert route("a.example.com", "/app", {"X-Canary": "two"}) == "Ingress/default/web (a.example.com)#2"
    assert route("a.example.com", "/app", {"x-canary": "anything"}) == "Ingress/default/web (a.example.com)#3"
    assert route("a.example.com", "/application") == default  # Prefix is segment-aware
    assert route("a.example.com", "/other") == default
    assert route("b.example.com", "/app") == default
