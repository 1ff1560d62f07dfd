"""FileSource: reading YAML files and directories into KObjects."""

from __future__ import annotations

import os

from control.objects.raw import LoadError
from control.sources.files import FileSource

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec: {gatewayClassName: fluxgate, listeners: [{name: http, port: 80, protocol: HTTP}]}
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: %s, namespace: apps}
spec: {ports: [{port: 80}]}
"""


def test_file_source_reads_documents_in_order(write):
    path = write("all.yaml", GATEWAY + "---\n" + SERVICE % "a" + "---\n---\n" + SERVICE % "b")
    loaded = FileSource(path).load()
    assert loaded.parsed_ok and not loaded.errors
    assert [(o.kind, o.name, o.document) for o in loaded.objects] == [
        ("Gateway", "gw", 1), ("Service", "a", 2), ("Service", "b", 4)]
    assert loaded.objects[1].namespace == "apps"
    assert loaded.objects[0].namespace == ""  # defaulted later, by the cache


def test_file_source_reads_directory_recursively_in_path_order(write, tmp_path):
    write("b.yaml", SERVICE % "b")
    write("a/z.yml", SERVICE % "z")
    write("a/y.yaml", SERVICE % "y")
    write("c.txt", "not: [yaml")
    loaded = FileSource(tmp_path).load()
    assert [o.name for o in loaded.objects] == ["y", "z", "b"]
    assert [os.path.relpath(f, tmp_path) for f in loaded.files] == ["a/y.yaml", "a/z.yml", "b.yaml"]


def test_file_source_skips_hidden_files_and_configmap_data_dirs(write, tmp_path):
    write("svc.yaml", SERVICE % "visible")
    write("..2024_01_01_00_00_00.1/svc.yaml", SERVICE % "hidden-copy")
    write(".editor.yaml", "not: [yaml")
    loaded = FileSource(tmp_path).load()
    assert [o.name for o in loaded.objects] == ["visible"]
    assert loaded.parsed_ok


def test_file_source_expands_list_documents(write):
    path = write("list.yaml", """\
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Service, metadata: {name: a}}
        - {apiVersion: v1, kind: Service, metadata: {name: b}}
        """)
    loaded = FileSource(path).load()
    assert [(o.name, o.document, o.item) for o in loaded.objects] == [("a", 1, 1), ("b", 1, 2)]
    assert "(document 1, item 2)" in loaded.objects[1].where


def test_file_source_parse_error_fails_the_whole_file_only(write, tmp_path):
    write("a.yaml", SERVICE % "a" + "---\nkind: [unclosed\n")
    write("b.yaml", SERVICE % "b")
    loaded = FileSource(tmp_path).load()
    assert not loaded.parsed_ok
    assert [o.name for o in loaded.objects] == ["b"]  # nothing from a.yaml, not even doc 1
    assert loaded.failed == {str(tmp_path / "a.yaml")}
    (error,) = loaded.errors
    assert error.file.endswith("a.yaml")
    assert "YAML parse error at line 7" in str(error)
    assert "started at line 6" in str(error)


def test_file_source_missing_path_fails_as_a_whole(tmp_path):
    missing = tmp_path / "nope"
    loaded = FileSource(missing).load()
    assert not loaded.parsed_ok
    assert loaded.did_fail(str(missing / "any.yaml"))
    assert "cannot read" in str(loaded.errors[0])


def test_file_source_rejects_documents_without_identity(write):
    path = write("bad.yaml", """\
        - a list
        ---
        kind: Service
        metadata: {name: x}
        ---
        apiVersion: v1
        kind: Service
        metadata: {namespace: x}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: 7}
        """)
    loaded = FileSource(path).load()
    assert loaded.parsed_ok and not loaded.objects
    reasons = [e.reason for e in loaded.errors]
    assert reasons == [
        "expected a mapping (a Kubernetes object), got a list",
        "apiVersion: required field is missing",
        "metadata.name: required field is missing",
        "metadata.name: expected a non-empty string, got an integer",
    ]


def test_file_source_fingerprint_changes_only_when_files_do(write, tmp_path):
    path = write("a.yaml", SERVICE % "a")
    source = FileSource(tmp_path)
    first = source.fingerprint()
    assert source.fingerprint() == first
    path.write_text(SERVICE % "a2")
    second = source.fingerprint()
    assert second != first
    write("b.yaml", SERVICE % "b")
    third = source.fingerprint()
    assert third != second
    (tmp_path / "b.yaml").unlink()
    assert source.fingerprint() != third
    hash(source.fingerprint())


def test_file_source_fingerprint_of_missing_path_is_stable(tmp_path):
    source = FileSource(tmp_path / "nope")
    assert source.fingerprint() == source.fingerprint()


def test_load_error_reads_as_one_line():
    error = LoadError("conf/routes.yaml", "HTTPRoute default/web", "spec.hostnames[0]: bad", 2)
    assert str(error) == "conf/routes.yaml (document 2) HTTPRoute default/web: spec.hostnames[0]: bad"
    assert str(LoadError("conf/x.yaml", "", "YAML parse error")) == "conf/x.yaml: YAML parse error"
