"""control/validate.py: what makes a configuration invalid, and how it is reported."""

from __future__ import annotations

import io
import json
import os
import subprocess

import posix_ipc
import pytest

from control import cli
from control.status import Condition
from control.validate import EXIT_INVALID, EXIT_OK, EXIT_USAGE, UsageError, is_failing, run, validate
from tests.cli.samples import (
    BAD_PORT, CONFIGMAP, GATEWAY, NOT_YAML, OTHER_CLASS, ROUTE, ROUTE_TO_NOWHERE, SERVICE,
    TCP_LISTENER, write,
)


def _tagged(result, tag):
    return [line for line in result.text() if line.split(" ", 1)[0] == tag]


def test_validate_valid_config_exits_0_with_every_condition_ok(tmp_path):
    result = validate(write(tmp_path / "gw.yaml", GATEWAY, SERVICE, ROUTE))
    assert result.exit_code == EXIT_OK
    text = result.text()
    assert text[-1] == ("valid: 0 errors, 0 failing conditions, 0 warnings, 0 notes; "
                        "1 file, 3 objects")
    assert text[:-1] == [
        "ok      Gateway default/gw: Accepted=True",
        "ok      Gateway default/gw: Programmed=True",
        "ok      Gateway default/gw listener http: Accepted=True",
        "ok      Gateway default/gw listener http: Conflicted=False (NoConflicts)",
        "ok      Gateway default/gw listener http: Programmed=True",
        "ok      Gateway default/gw listener http: ResolvedRefs=True",
        "ok      HTTPRoute default/web parent Gateway default/gw: Accepted=True",
        "ok      HTTPRoute default/web parent Gateway default/gw: ResolvedRefs=True",
    ]


def test_validate_unparsable_file_exits_1_naming_the_file(tmp_path):
    write(tmp_path / "a-good.yaml", GATEWAY)
    bad = write(tmp_path / "b-bad.yaml", NOT_YAML)
    result = validate(tmp_path)
    assert result.exit_code == EXIT_INVALID
    [error] = _tagged(result, "error")
    assert f"{bad}: YAML parse error at line 3, column 1" in error
    assert result.failed == frozenset([str(bad)])


def test_validate_invalid_object_exits_1_with_the_field_named(tmp_path):
    result = validate(write(tmp_path / "gw.yaml", GATEWAY, BAD_PORT))
    assert result.exit_code == EXIT_INVALID
    assert _tagged(result, "error") == [
        f"error   {tmp_path}/gw.yaml (document 2) Gateway default/bad: rejected: "
        "spec.listeners[0].port: expected int <= 65535"
    ]
    assert not _tagged(result, "fail")  # the valid Gateway is still checked, and fine


def test_validate_duplicate_object_exits_1(tmp_path):
    write(tmp_path / "a.yaml", GATEWAY)
    write(tmp_path / "b.yaml", GATEWAY)
    result = validate(tmp_path)
    assert result.exit_code == EXIT_INVALID
    [error] = _tagged(result, "error")
    assert "b.yaml (document 1) Gateway default/gw: ignored: duplicate" in error


def test_validate_unresolved_backend_exits_1_with_a_failing_condition(tmp_path):
    result = validate(write(tmp_path / "gw.yaml", GATEWAY, ROUTE_TO_NOWHERE))
    assert result.exit_code == EXIT_INVALID
    assert _tagged(result, "fail") == [
        "fail    HTTPRoute default/nowhere parent Gateway default/gw: ResolvedRefs=False "
        "(BackendNotFound: Service default/missing not found)"
    ]


def test_validate_listener_not_accepted_exits_1(tmp_path):
    result = validate(write(tmp_path / "gw.yaml", TCP_LISTENER))
    assert result.exit_code == EXIT_INVALID
    failing = _tagged(result, "fail")
    assert "fail    Gateway default/mixed listener tcp: Accepted=False (UnsupportedProtocol: " \
        "protocol TCP is not supported (use HTTP or HTTPS))" in failing
    # The Gateway itself is Accepted (its other listener serves): only the listener fails.
    assert all(" listener tcp: " in line for line in failing)


def test_validate_warnings_and_notes_do_not_fail(tmp_path):
    result = validate(write(tmp_path / "gw.yaml", GATEWAY, CONFIGMAP, OTHER_CLASS))
    assert result.exit_code == EXIT_OK
    assert _tagged(result, "warning") == [
        f"warning {tmp_path}/gw.yaml (document 2) ConfigMap settings: "
        "ignored: unsupported kind ConfigMap (v1)"
    ]
    assert _tagged(result, "note") == [
        "note    Gateway default/theirs ignored: GatewayClass 'nginx' is not handled by FluxGate"
    ]


def test_validate_directory_without_yaml_exits_1(tmp_path):
    (tmp_path / "README.md").write_text("not a config\n")
    result = validate(tmp_path)
    assert result.exit_code == EXIT_INVALID
    assert _tagged(result, "error") == [f"error   {tmp_path}: no YAML files (*.yaml, *.yml) found"]


def test_validate_missing_path_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file or directory"):
        validate(tmp_path / "nope.yaml")
    err = io.StringIO()
    assert run(str(tmp_path / "nope.yaml"), out=io.StringIO(), err=err) == EXIT_USAGE
    assert "nope.yaml: no such file or directory" in err.getvalue()


@pytest.mark.parametrize("type_, status, failing", [
    ("Accepted", "True", False),
    ("Accepted", "False", True),
    ("ResolvedRefs", "Unknown", True),
    ("Programmed", "False", True),
    ("Conflicted", "False", False),
    ("Conflicted", "True", True),
    ("PartiallyInvalid", "True", True),
    ("PartiallyInvalid", "False", False),
])
def test_is_failing_follows_each_condition_types_polarity(type_, status, failing):
    assert is_failing(Condition(type_, status, "Reason")) is failing


def test_validate_text_is_sorted_and_stable_whatever_the_document_order(tmp_path):
    one = validate(write(tmp_path / "one" / "c.yaml", TCP_LISTENER, GATEWAY, SERVICE, ROUTE))
    two = validate(write(tmp_path / "two" / "c.yaml", ROUTE, SERVICE, GATEWAY, TCP_LISTENER))
    assert one.text() == two.text()
    scopes = [line.split(" ", 1)[1].strip().split(": ")[0] for line in one.text()
              if line.startswith(("ok ", "fail "))]
    # Objects in report order, each one's own conditions before its listeners' by name.
    assert list(dict.fromkeys(scopes)) == [
        "Gateway default/gw", "Gateway default/gw listener http",
        "Gateway default/mixed", "Gateway default/mixed listener http",
        "Gateway default/mixed listener tcp", "HTTPRoute default/web parent Gateway default/gw",
    ]
    types = [line.split(": ")[1].split("=")[0] for line in one.text() if " listener tcp: " in line]
    assert types == ["Accepted", "Conflicted", "Programmed", "ResolvedRefs"]


def test_validate_quiet_prints_only_what_fails(tmp_path):
    valid = validate(write(tmp_path / "ok.yaml", GATEWAY, CONFIGMAP, OTHER_CLASS))
    assert valid.text(quiet=True) == []
    invalid = validate(write(tmp_path / "bad.yaml", GATEWAY, BAD_PORT, ROUTE_TO_NOWHERE, CONFIGMAP))
    tags = [line.split(" ", 1)[0] for line in invalid.text(quiet=True)]
    assert tags == ["error", "fail"]


def test_validate_json_holds_files_errors_and_objects_with_their_conditions(tmp_path):
    path = write(tmp_path / "gw.yaml", GATEWAY, BAD_PORT, ROUTE_TO_NOWHERE, CONFIGMAP)
    out = io.StringIO()
    assert run(str(path), output="json", out=out) == EXIT_INVALID
    doc = json.loads(out.getvalue())
    assert doc["valid"] is False and doc["exitCode"] == EXIT_INVALID
    assert doc["files"] == [{"path": str(path), "parsed": True}]
    [error] = doc["errors"]
    assert error["object"] == "Gateway default/bad" and error["document"] == 2
    assert error["reason"].startswith("rejected: spec.listeners[0].port")
    assert [w["object"] for w in doc["warnings"]] == ["ConfigMap settings"]
    gateway, route = doc["objects"]
    assert (gateway["kind"], gateway["name"], gateway["failing"]) == ("Gateway", "gw", [])
    assert gateway["source"] == f"{path} (document 1)"
    assert gateway["listeners"][0]["attachedRoutes"] == 1
    assert route["source"] == f"{path} (document 3)"
    assert route["failing"] == ["HTTPRoute default/nowhere parent Gateway default/gw: "
                                "ResolvedRefs=False (BackendNotFound: Service default/missing not found)"]
    conditions = {c["type"]: c["status"] for c in route["parents"][0]["conditions"]}
    assert conditions == {"Accepted": "True", "ResolvedRefs": "False"}
    assert {o["object"] for o in doc["loaded"]} == {"Gateway default/gw", "HTTPRoute default/nowhere"}


def test_validate_cli_starts_no_process_and_maps_no_shared_memory(tmp_path, monkeypatch, capsys):
    def forbidden(*args, **kwargs):
        raise AssertionError("validate must not start processes or touch shared memory")

    for owner, name in ((posix_ipc, "SharedMemory"), (posix_ipc, "Semaphore"),
                        (subprocess, "Popen"), (os, "fork"), (os, "posix_spawn")):
        monkeypatch.setattr(owner, name, forbidden)
    path = write(tmp_path / "gw.yaml", GATEWAY, SERVICE, ROUTE)
    assert cli.main(["validate", str(path)]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[-1].startswith("valid: ")


FLUXGATE_POLICY = """\
apiVersion: fluxgate.io/v1alpha3
kind: FluxGatePolicy
metadata: {name: limits}
spec: {targetRef: {kind: HTTPRoute, name: web}}
"""

TLS_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: tls}
spec: {parentRefs: [{name: gw}]}
"""


@pytest.mark.parametrize("doc, what", [
    (FLUXGATE_POLICY, "FluxGatePolicy (fluxgate.io/v1alpha3)"),
    (TLS_ROUTE, "TLSRoute (gateway.networking.k8s.io/v1alpha2)"),
])
def test_validate_unserved_kind_of_our_groups_exits_1(tmp_path, doc, what):
    # `fluxgate run` would not enforce it: a pipeline must not pass it as "valid, 1 warning".
    result = validate(write(tmp_path / "gw.yaml", GATEWAY, doc))
    assert result.exit_code == EXIT_INVALID
    [error] = _tagged(result, "error")
    assert f"(document 2) {what.split(' ')[0]}" in error
    assert f"not enforced: {what} is not a kind FluxGate serves" in error
    assert not _tagged(result, "warning")
    assert result.text()[-1].startswith("invalid: 1 error,")


def test_validate_unsupported_kind_of_other_groups_stays_a_warning(tmp_path):
    result = validate(write(tmp_path / "gw.yaml", GATEWAY, CONFIGMAP))
    assert result.exit_code == EXIT_OK and len(_tagged(result, "warning")) == 1
