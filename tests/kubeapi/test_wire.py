"""HTTP details below the client: content types, methods, keep-alive, error bodies."""

from __future__ import annotations

import http.client
import json

import pytest


@pytest.fixture
def http_conn(kube):
    conn = http.client.HTTPConnection("127.0.0.1", kube.port, timeout=5)
    yield conn
    conn.close()


def call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, resp.getheader("Content-Type"), data


@pytest.mark.parametrize("accept", ["application/json, */*",
                                    "application/vnd.kubernetes.protobuf",
                                    "application/vnd.kubernetes.protobuf, application/json", None])
def test_every_answer_is_json_whatever_accept_says(http_conn, accept):
    headers = {"Accept": accept} if accept else {}
    status, ctype, data = call(http_conn, "GET", "/api/v1/namespaces/default", headers=headers)
    assert status == 200 and ctype == "application/json"
    assert json.loads(data)["kind"] == "Namespace"


def test_yaml_bodies_are_accepted(http_conn):
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  k: v\n"
    status, _, data = call(http_conn, "POST", "/api/v1/namespaces/default/configmaps", body,
                           {"Content-Type": "application/yaml"})
    assert status == 201 and json.loads(data)["data"] == {"k": "v"}


def test_protobuf_bodies_are_415(http_conn):
    status, _, data = call(http_conn, "POST", "/api/v1/namespaces/default/configmaps", b"\x6b\x38",
                           {"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert status == 415 and json.loads(data)["reason"] == "UnsupportedMediaType"


def test_undecodable_json_is_400(http_conn):
    status, _, data = call(http_conn, "POST", "/api/v1/namespaces/default/configmaps", "{nope",
                           {"Content-Type": "application/json"})
    assert status == 400 and json.loads(data)["reason"] == "BadRequest"


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/v1/namespaces/default/configmaps/x"),
    ("PUT", "/api/v1/namespaces/default/configmaps"),
    ("PATCH", "/api/v1/namespaces/default/configmaps"),
    ("POST", "/apis/fluxgate.io/v1alpha3/fluxgateroutes"),
    ("DELETE", "/api/v1/namespaces"),
    ("POST", "/apis"),
])
def test_verbs_a_path_does_not_take_are_405(http_conn, method, path):
    status, _, data = call(http_conn, method, path, "{}", {"Content-Type": "application/json"})
    assert status == 405
    assert json.loads(data)["reason"] == "MethodNotAllowed"


def test_subresources_other_than_status_are_404(http_conn, kube):
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    for path in ("/api/v1/namespaces/default/configmaps/x/status",
                 "/api/v1/namespaces/default/services/x/proxy",
                 "/apis/fluxgate.io/v1alpha3/fluxgateroutes/x"):
        status, _, data = call(http_conn, "GET", path)
        assert status == 404, path
        assert json.loads(data)["message"] == "the server could not find the requested resource"


def test_connections_are_kept_alive_and_chunked_bodies_read(http_conn):
    call(http_conn, "GET", "/version")
    http_conn.putrequest("POST", "/api/v1/namespaces/default/configmaps")
    http_conn.putheader("Content-Type", "application/json")
    http_conn.putheader("Transfer-Encoding", "chunked")
    http_conn.endheaders()
    body = json.dumps({"metadata": {"name": "c"}}).encode()
    http_conn.send(b"%X\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    resp = http_conn.getresponse()
    assert resp.status == 201 and json.loads(resp.read())["metadata"]["name"] == "c"
    status, _, _ = call(http_conn, "GET", "/api/v1/namespaces/default/configmaps/c")
    assert status == 200


def test_health_and_root_documents(http_conn):
    assert call(http_conn, "GET", "/healthz")[2] == b"ok"
    assert call(http_conn, "GET", "/readyz")[2] == b"ok"
    assert "/apis" in json.loads(call(http_conn, "GET", "/")[2])["paths"]


def test_bad_dry_run_value_is_400(http_conn):
    status, _, _ = call(http_conn, "POST", "/api/v1/namespaces/default/configmaps?dryRun=Some",
                        json.dumps({"metadata": {"name": "x"}}),
                        {"Content-Type": "application/json"})
    assert status == 400


def test_send_initial_events_without_not_older_than_is_422(http_conn):
    status, _, data = call(http_conn, "GET",
                           "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true")
    assert status == 422 and json.loads(data)["reason"] == "Invalid"


def test_server_binds_loopback_only(kube):
    assert kube._httpd.server_address[0] == "127.0.0.1"
