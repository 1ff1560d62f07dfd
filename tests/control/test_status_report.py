"""StatusReport: conditions merged by type, readable lines, change lists."""

from __future__ import annotations

import json

from control.status import ParentRef, StatusReport


def _report(programmed: bool = True, with_route: bool = True) -> StatusReport:
    report = StatusReport()
    gw = report.object("Gateway", "default", "gw")
    gw.set("Accepted", True, "Accepted")
    gw.set("Programmed", programmed, "Programmed" if programmed else "Invalid",
           "" if programmed else "no listener is valid")
    listener = gw.listener("http")
    listener.attached_routes = 1
    listener.set("Accepted", True, "Accepted")
    if with_route:
        route = report.object("HTTPRoute", "default", "web")
        parent = route.parent(ParentRef("gateway.networking.k8s.io", "Gateway", "default", "gw"),
                              "fluxgate.io/gateway-controller")
        parent.set("Accepted", True, "Accepted")
    return report


def test_status_set_replaces_a_condition_of_the_same_type():
    report = StatusReport()
    gw = report.object("Gateway", "default", "gw")
    gw.set("Accepted", True, "Accepted")
    gw.set("Programmed", True, "Programmed")
    gw.set("Accepted", False, "UnsupportedAddress", "nope")
    assert [(c.type, c.status, c.reason) for c in gw.conditions] == [
        ("Accepted", "False", "UnsupportedAddress"), ("Programmed", "True", "Programmed")]
    assert report.object("Gateway", "default", "gw") is gw


def test_status_lines_show_details_only_for_unusual_reasons():
    lines = _report(programmed=False).lines()
    assert lines == [
        "Gateway default/gw: Accepted=True Programmed=False (Invalid: no listener is valid)",
        "Gateway default/gw listener http: attachedRoutes=1 Accepted=True",
        "HTTPRoute default/web parent Gateway default/gw: Accepted=True",
    ]


def test_status_changes_since_lists_only_what_changed():
    assert _report().changes_since(_report()) == []
    assert _report(programmed=False).changes_since(_report()) == [
        "Gateway default/gw: Accepted=True Programmed=False (Invalid: no listener is valid)",
        "Gateway default/gw listener http: attachedRoutes=1 Accepted=True",
    ]
    assert _report().changes_since(None) == _report().lines()


def test_status_changes_since_reports_objects_no_longer_there():
    assert _report(with_route=False).changes_since(_report()) == ["HTTPRoute default/web: no longer reported"]


def test_status_changes_since_reports_new_notes():
    old, new = _report(), _report()
    new.note("Gateway default/x ignored")
    assert new.changes_since(old) == ["note: Gateway default/x ignored"]


def test_status_to_builtins_is_json_ready_and_uses_api_field_names():
    data = _report().to_builtins()
    json.dumps(data)
    gateway, route = data["objects"]
    assert gateway["listeners"][0]["attachedRoutes"] == 1
    assert route["parents"][0]["parentRef"] == {
        "group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default", "name": "gw"}
    assert route["parents"][0]["controllerName"] == "fluxgate.io/gateway-controller"


def test_status_reports_compare_by_content():
    assert _report() == _report()
    assert _report() != _report(programmed=False)


def test_status_judged_changes_mark_failing_conditions():
    # The runner logs a rejection (a failing condition) as a warning.
    judged = _report(programmed=False).judged_changes_since(_report())
    assert judged == [
        ("Gateway default/gw: Accepted=True Programmed=False (Invalid: no listener is valid)", True),
        ("Gateway default/gw listener http: attachedRoutes=1 Accepted=True", False),
    ]
    assert [line for line, _ in judged] == _report(programmed=False).changes_since(_report())
    assert not any(failing for _, failing in _report().judged_changes_since(None))
