"""The admission webhook over real HTTPS on loopback, with a certificate made here."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from control.servers import webhook
from control.objects.raw import KObject
from control.objects import validation
from control.servers.webhook import Webhook, check, review
from control.translate import httproute
from control.translate.backends import BackendResolver
from control.translate.store import Store

GW = ("gateway.networking.k8s.io", "v1")


def _certificate(directory: Path, name: str = "webhook") -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (PEM files: cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class Served:
    """The webhook on its own event loop in a thread, on a free loopback port."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert = cert
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.hook = Webhook("127.0.0.1", 0, cert, key)
        asyncio.run_coroutine_threadsafe(self.hook.start(), self.loop).result(5)

    def connect(self, cafile: str | None = None) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=cafile or self.cert)
        return http.client.HTTPSConnection("127.0.0.1", self.hook.port, context=context,
                                           timeout=5)

    def post(self, body, conn: http.client.HTTPSConnection | None = None,
             path: str = webhook.PATH) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        own = conn is None
        conn = conn or self.connect()
        try:
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            if own:
                conn.close()

    def stop(self) -> None:
        async def close():
            self.hook.close()
            await self.hook.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def served(tmp_path):
    cert, key = _certificate(tmp_path)
    s = Served(cert, key)
    yield s
    s.stop()


def _review(obj: dict | None, operation: str = "CREATE", old: dict | None = None,
            **extra) -> dict:
    source = obj or old or {}
    group, _, version = source.get("apiVersion", "/v1").rpartition("/")
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": source.get("kind", "")},
        "resource": {"group": group, "version": version, "resource": "x"},
        "name": (source.get("metadata") or {}).get("name", ""),
        "namespace": "default",
        "operation": operation,
        "userInfo": {"username": "tester"},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
    }
    request.update(extra)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def _route(*rules: dict, kind: str = "HTTPRoute") -> dict:
    api_version = "gateway.networking.k8s.io/v1" if kind == "HTTPRoute" else "fluxgate.io/v1alpha3"
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "web"},
            "spec": {"parentRefs": [{"name": "gw"}],
                     "rules": list(rules) or [{"backendRefs": [{"name": "web", "port": 80}]}]}}


def _parse_message(obj: dict) -> str:
    """What ``fluxgate validate`` / the object cache say about ``obj``."""
    with pytest.raises(validation.Invalid) as err:
        validation.parse(KObject(obj, "x.yaml", 1))
    return str(err.value)


BAD_PATH = _route({"matches": [{"path": {"type": "PathPrefix", "value": "api"}}]})
CANARY_101 = _route({"backendRefs": [{"name": "web", "port": 80}],
                     "canary": {"weight": 101, "backendRefs": [{"name": "next", "port": 80}]}},
                    kind="FluxGateRoute")
BAD_INGRESS = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
               "spec": {"rules": [{"http": {"paths": [{"path": "api", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}
BAD_GATEWAY = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "gw"}, "spec": {"gatewayClassName": "fluxgate", "listeners": [
                   {"name": "a", "port": 80, "protocol": "HTTP"},
                   {"name": "a", "port": 81, "protocol": "HTTP"}]}}


# --- over HTTPS ------------------------------------------------------------------------------

def test_webhook_allows_a_valid_route_and_echoes_the_uid(served):
    body = _review(_route())
    status, answer = served.post(body)
    assert status == 200
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"] == {"uid": body["request"]["uid"], "allowed": True}


@pytest.mark.parametrize("obj", [BAD_PATH, CANARY_101, BAD_INGRESS, BAD_GATEWAY],
                         ids=["bad path", "canary weight 101", "ingress path", "listener twice"])
def test_webhook_denies_with_the_message_validation_gives(served, obj):
    body = _review(obj)
    status, answer = served.post(body)
    assert status == 200
    assert answer["response"] == {
        "uid": body["request"]["uid"], "allowed": False,
        "status": {"code": 422, "reason": "Invalid", "message": _parse_message(obj)}}


def test_webhook_denies_an_unknown_filter_type_as_translation_would(served):
    obj = _route({"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {}},
                              {"type": "Rewrite"}]})
    status, answer = served.post(_review(obj))
    assert status == 200 and not answer["response"]["allowed"]
    # translation: "rule 0: filters[1]: unknown filter type 'Rewrite'" (PartiallyInvalid)
    assert answer["response"]["status"]["message"] == (
        "spec.rules[0].filters[1]: unknown filter type 'Rewrite'")


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_webhook_allows_delete_and_connect(served, operation):
    body = _review(None, operation, old=BAD_PATH)
    status, answer = served.post(body)
    assert status == 200 and answer["response"] == {"uid": body["request"]["uid"], "allowed": True}


def test_webhook_rejects_malformed_json_with_400(served):
    status, answer = served.post(b'{"kind": "AdmissionReview", "request": ')
    assert status == 400 and "not JSON" in answer["error"]
    status, answer = served.post({"kind": "AdmissionReview", "request": {"operation": "CREATE"}})
    assert status == 400 and "uid" in answer["error"]


def test_webhook_answers_other_paths_and_methods(served):
    assert served.post(_review(_route()), path="/")[0] == 404
    conn = served.connect()
    conn.request("GET", webhook.PATH)
    resp = conn.getresponse()
    assert resp.status == 405
    resp.read()
    conn.close()


def test_webhook_keeps_the_connection_alive(served):
    conn = served.connect()
    try:
        for obj, allowed in ((_route(), True), (BAD_PATH, False), (_route(), True)):
            status, answer = served.post(_review(obj), conn=conn)
            assert status == 200 and answer["response"]["allowed"] is allowed
    finally:
        conn.close()
    assert served.hook.reviews == 3 and served.hook.denied == 1


def test_webhook_refuses_clients_that_do_not_trust_its_certificate(served, tmp_path):
    other, _ = _certificate(tmp_path, "other")
    conn = served.connect(cafile=other)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("POST", webhook.PATH, body=b"{}")
    conn.close()
    with socket.create_connection(("127.0.0.1", served.hook.port), timeout=5) as plain:
        plain.sendall(b"POST /validate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        assert not plain.recv(100).startswith(b"HTTP/1.1 ")  # no plaintext answers


def test_webhook_picks_up_a_rotated_certificate(served, tmp_path, monkeypatch):
    monkeypatch.setattr(webhook, "RELOAD_INTERVAL", 0.0)
    trusted = tmp_path / "trusted.pem"  # the client trusts the old and the new certificate
    trusted.write_text(Path(served.cert).read_text())
    new_cert, new_key = _certificate(tmp_path, "rotated")
    trusted.write_text(trusted.read_text() + Path(new_cert).read_text())
    new_der = ssl.PEM_cert_to_DER_cert(Path(new_cert).read_text())
    os.replace(new_key, served.hook.key_file)  # as a Secret volume update does
    os.replace(new_cert, served.hook.cert_file)
    deadline = time.monotonic() + 5
    while True:  # a connection notices the change; the ones after it get the new certificate
        conn = served.connect(cafile=str(trusted))
        try:
            conn.connect()
            der = conn.sock.getpeercert(binary_form=True)
        finally:
            conn.close()
        if der == new_der:
            break
        assert time.monotonic() < deadline, "the rotated certificate was not served"
        time.sleep(0.05)
    assert served.post(_review(_route()))[0] == 200  # served.cert is the new one now


# --- the review itself -----------------------------------------------------------------------

def test_webhook_allows_status_updates_and_unchecked_kinds():
    assert review(json.dumps(_review(BAD_PATH, "UPDATE", old=BAD_PATH,
                                     subResource="status")).encode())["response"]["allowed"]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"ports": [{"port": 1}, {"port": 2}]}}
    assert review(json.dumps(_review(service)).encode())["response"]["allowed"]
    old_version = dict(BAD_PATH, apiVersion="gateway.networking.k8s.io/v1alpha2")
    assert review(json.dumps(_review(old_version)).encode())["response"]["allowed"]


def test_webhook_update_that_keeps_an_invalid_spec_is_allowed():
    labelled = dict(BAD_PATH, metadata={"name": "web", "labels": {"team": "a"}})
    assert review(json.dumps(_review(labelled, "UPDATE", old=BAD_PATH)).encode())[
        "response"]["allowed"]
    deleting = dict(CANARY_101, metadata={"name": "web", "deletionTimestamp": "2030-01-01T00:00:00Z"})
    changed = dict(deleting, spec=dict(deleting["spec"], hostnames=["a.example"]))
    assert review(json.dumps(_review(changed, "UPDATE", old=CANARY_101)).encode())[
        "response"]["allowed"]
    fixed_badly = dict(BAD_PATH, spec=dict(BAD_PATH["spec"], hostnames=["a.example"]))
    assert not review(json.dumps(_review(fixed_badly, "UPDATE", old=BAD_PATH)).encode())[
        "response"]["allowed"]


def test_webhook_names_generated_objects_and_takes_the_request_namespace():
    obj = dict(BAD_PATH, metadata={"generateName": "web-"})
    answer = review(json.dumps(_review(obj, name="")).encode())["response"]
    assert answer["status"]["message"] == _parse_message(BAD_PATH)


@pytest.mark.parametrize("rule, message", [
    ({"filters": [{"type": "URLRewrite"}]},
     "spec.rules[0].filters[0]: type URLRewrite needs its urlRewrite field"),
    ({"filters": [{"type": "RequestRedirect", "requestRedirect": {}},
                  {"type": "URLRewrite", "urlRewrite": {}}]},
     "spec.rules[0]: a rule may have a RequestRedirect or a URLRewrite filter, not both"),
    ({"backendRefs": [{"name": "web", "port": 80, "filters": [{"type": "Nope"}]}]},
     "spec.rules[0].backendRefs[0].filters[0]: unknown filter type 'Nope'"),
])
def test_webhook_filter_problems_name_the_field(rule, message):
    assert check(_route(rule)) == message


@pytest.mark.parametrize("bad", [
    {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
    {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "a b", "value": "x"}]}},
    {"type": "Rewrite"},
])
def test_webhook_filter_problem_is_the_reason_translation_drops_the_rule(bad):
    obj = _route({"matches": [{"path": {"type": "Exact", "value": "/x"}}], "filters": [bad]})
    route = validation.parse(KObject(obj, "x.yaml", 1))
    _, dropped, _ = httproute.rules(route, BackendResolver(Store([route])))
    assert dropped == ["rule 0: " + check(obj).removeprefix("spec.rules[0].")]


def test_webhook_allows_what_is_valid_but_not_supported_yet():
    # A redirect on a backendRef: valid Gateway API, dropped by FluxGate with a
    # condition (PartiallyInvalid), not refused at admission.
    rule = {"backendRefs": [{"name": "web", "port": 80, "filters": [
        {"type": "RequestRedirect", "requestRedirect": {"statusCode": 301}}]}]}
    assert check(_route(rule)) is None
