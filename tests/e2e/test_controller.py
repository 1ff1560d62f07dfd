"""``fluxgate controller`` end to end: status, leader failover, admission webhook,
Ingress status, and an API server that is absent or dies.

The API server is ``python -m tests.kubeapi`` (KubeAPIProcess); each controller
is a real ``python -m control.cli controller`` process reading a kubeconfig
that points at it, on free loopback ports, stopped by its pid in a finaliser.
Objects go in over the API, status is read back from it. An absent API server
is a port held bound but not listening (connections are refused, and the
kernel hands the port to nobody else), later released to a new API server.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from control.objects.raw import KObject
from control.objects import validation
from tests.e2e.gateway import ROOT, free_port, objects, reserve_port, route, stop_process
from tests.e2e.test_kubernetes import GATEWAY_CLASS, eventually, write_kubeconfig
from tests.kubeapi import KubeAPIProcess

ROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes"
GATEWAYS = "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/default/leases/fluxgate-controller"
CONTROLLER = "fluxgate.io/gateway-controller"
# A short lease, so failover is quick: duration / renew deadline / retry period.
SHORT_LEASE = {"FLUXGATE_LEASE_DURATION": "2", "FLUXGATE_LEASE_RENEW_DEADLINE": "1.5",
               "FLUXGATE_LEASE_RETRY_PERIOD": "0.3"}


class ControllerProcess:
    """``fluxgate controller`` as a child process."""

    def __init__(self, tmp_path: Path, kubeconfig: Path, name: str, **env: str) -> None:
        self.name = name
        self.log_path = tmp_path / f"controller-{name}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXGATE_")}
        self.env.update({
            "FLUXGATE_KUBECONFIG": str(kubeconfig),
            "FLUXGATE_ADMIN_ADDRESS": "127.0.0.1",
            "FLUXGATE_LOG_FORMAT": "text",
            "FLUXGATE_HOLDOFF_MS": "20",
            "FLUXGATE_LEASE_NAMESPACE": "default",
            "FLUXGATE_POD_NAME": name,
            **env,
        })
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, ready: bool = True) -> "ControllerProcess":
        """Start and wait until /readyz says ready (``ready=False``: until /healthz answers)."""
        for attempt in range(3):
            self.admin_port = free_port()
            self.env["FLUXGATE_ADMIN_PORT"] = str(self.admin_port)
            if "FLUXGATE_WEBHOOK_CERT" in self.env:
                self.webhook_port = free_port()
                self.env["FLUXGATE_WEBHOOK_PORT"] = str(self.webhook_port)
            self._log = open(self.log_path, "wb")
            self.proc = subprocess.Popen([sys.executable, "-m", "control.cli", "controller"],
                                         env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                         cwd=ROOT)
            try:
                self.wait_ready(path="/readyz" if ready else "/healthz")
                return self
            except RuntimeError:
                # A free port taken by someone else in between: start again on new ones.
                if "cannot start the" not in self.log() or attempt == 2:
                    raise
                self._log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 10.0, path: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.admin(path)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"controller not ready in {timeout}s:\n{self.log()}")

    def admin(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def metric(self, name: str, labels: str = "") -> float:
        text = self.admin("/metrics")[1].decode()
        found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
        assert found, f"no {name}{labels} in /metrics:\n{text}"
        return float(found.group(1))

    def kill(self) -> None:
        """SIGKILL: a crash (the Lease is not released, it expires)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)

    def stop(self) -> int | None:
        rc = stop_process(self.proc, deadline=10) if self.proc is not None else None
        if self._log is not None:
            self._log.close()
        return rc


@pytest.fixture
def kubeapi():
    proc = KubeAPIProcess("--bookmark-interval", "60").start()
    yield proc
    proc.stop()


@pytest.fixture
def controllers(tmp_path):
    """``make(kubeconfig, name, ready=True, **env)``: controllers stopped by pid at the end."""
    started: list[ControllerProcess] = []

    def make(kubeconfig: Path, name: str = "ctl-a", ready: bool = True, **env: str) -> ControllerProcess:
        ctl = ControllerProcess(tmp_path, kubeconfig, name, **env)
        started.append(ctl)
        return ctl.start(ready)

    yield make
    for ctl in started:
        ctl.stop()


@pytest.fixture
def controller_factory(tmp_path, kubeapi, controllers):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kubeapi.port)

    def make(name: str = "ctl-a", **env: str) -> ControllerProcess:
        return controllers(kubeconfig, name, **env)

    return make


def api_get(api: KubeAPIProcess, path: str) -> dict | None:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return json.loads(body) if resp.status == 200 else None
    finally:
        conn.close()


def conditions(obj: dict | None, parent: bool = True) -> dict[str, tuple[str, str]]:
    """type → (status, reason): of our first parent (routes) or the object (Gateways)."""
    status = (obj or {}).get("status") or {}
    if parent:
        ours = [p for p in status.get("parents") or () if p.get("controllerName") == CONTROLLER]
        conds = ours[0]["conditions"] if ours else []
    else:
        conds = status.get("conditions") or []
    return {c["type"]: (c["status"], c["reason"]) for c in conds}


def route_conditions(api: KubeAPIProcess, name: str) -> dict[str, tuple[str, str]]:
    return conditions(api_get(api, f"{ROUTES}/{name}"))


def holder(api: KubeAPIProcess) -> str | None:
    lease = api_get(api, LEASE)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def web(name: str = "web", backend: str = "a", **parent) -> dict:
    obj = route(name, [{"backendRefs": [{"name": backend, "port": 80}]}])
    obj["spec"]["parentRefs"] = [{"name": "gw", **parent}]
    return obj


def apply_world(api: KubeAPIProcess, routes: list[dict]) -> None:
    for obj in [GATEWAY_CLASS, *objects(8080, {"a": [18080]}, routes)]:
        api.apply(obj)


ACCEPTED = {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}


# --- (a) status -----------------------------------------------------------------------------

def test_controller_writes_status_once_and_not_again_for_the_same_state(kubeapi, controller_factory):
    apply_world(kubeapi, [web("web"), web("bad", sectionName="nope"), web("lost", backend="nowhere")])
    ctl = controller_factory("ctl-a", FLUXGATE_RESYNC_SECONDS="1", **SHORT_LEASE)

    eventually(lambda: route_conditions(kubeapi, "web") == ACCEPTED, what="the route's status")
    assert conditions(api_get(kubeapi, f"{GATEWAYS}/gw"), parent=False) == {
        "Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")}
    eventually(lambda: route_conditions(kubeapi, "bad").get("Accepted") == ("False", "NoMatchingParent"),
               what="the route to a missing listener to be refused")
    eventually(lambda: route_conditions(kubeapi, "lost") == {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound")},
        what="the route to a missing Service to say so")
    assert holder(kubeapi) == "ctl-a"
    assert ctl.metric("fluxgate_controller_leader") == 1

    # Settled: full passes keep running (every FLUXGATE_RESYNC_SECONDS) but write nothing.
    eventually(lambda: ctl.metric("fluxgate_status_writes_total") == 5, what="5 objects written")
    rv = api_get(kubeapi, f"{ROUTES}/web")["metadata"]["resourceVersion"]
    full = ctl.metric("fluxgate_status_passes_total", '{kind="full"}')
    time.sleep(2.5)
    assert ctl.metric("fluxgate_status_passes_total", '{kind="full"}') >= full + 2
    assert ctl.metric("fluxgate_status_writes_total") == 5
    assert api_get(kubeapi, f"{ROUTES}/web")["metadata"]["resourceVersion"] == rv

    # A change is written once: the new route, and nothing else.
    kubeapi.apply(web("late"))
    eventually(lambda: route_conditions(kubeapi, "late") == ACCEPTED, what="the new route's status")
    eventually(lambda: ctl.metric("fluxgate_status_writes_total") == 7,
               what="the route and the Gateway (attachedRoutes 2) written")
    assert api_get(kubeapi, f"{ROUTES}/web")["metadata"]["resourceVersion"] == rv
    status = json.loads(ctl.admin("/debug/status")[1])
    assert status["leader"] is True and status["identity"] == "ctl-a"


# --- (b) leader failover --------------------------------------------------------------------

def test_controller_leader_failover_within_one_lease_duration(kubeapi, controller_factory):
    apply_world(kubeapi, [web("web")])
    ctls = {name: controller_factory(name, **SHORT_LEASE) for name in ("ctl-a", "ctl-b")}
    leader_name = eventually(lambda: holder(kubeapi), what="a leader")
    leader = ctls[leader_name]
    (follower,) = [c for n, c in ctls.items() if n != leader_name]
    eventually(lambda: route_conditions(kubeapi, "web") == ACCEPTED, what="the route's status")
    # The follower has a warm cache but never writes.
    eventually(lambda: json.loads(follower.admin("/debug/status")[1])["objects"],
               what="the follower's translation")
    assert follower.metric("fluxgate_controller_leader") == 0
    assert follower.metric("fluxgate_status_writes_total") == 0
    transitions = api_get(kubeapi, LEASE)["spec"]["leaseTransitions"]

    leader.kill()
    killed = time.monotonic()
    eventually(lambda: holder(kubeapi) == follower.name, timeout=6, what="the follower to take over")
    took = time.monotonic() - killed
    # The lease expires 2 s after the last renewal (<= 0.3 s before the kill); the
    # follower notices within a retry period (+20 % jitter) and one request.
    assert took < 2 + 0.36 + 0.6, f"failover took {took:.2f}s"
    print(f"failover took {took:.2f}s")
    assert api_get(kubeapi, LEASE)["spec"]["leaseTransitions"] == transitions + 1
    eventually(lambda: follower.metric("fluxgate_controller_leader") == 1, what="the new leader's belief")

    kubeapi.apply(web("late"))
    eventually(lambda: route_conditions(kubeapi, "late") == ACCEPTED, what="the new leader's write")
    # The counter is added to when the whole status pass returns (controller.py
    # _write), after its writes: the route's status can be seen first.
    eventually(lambda: follower.metric("fluxgate_status_writes_total") >= 2,  # the route and the Gateway
               what="the new leader's status writes counted")


# --- (c) admission webhook ------------------------------------------------------------------

def self_signed(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (PEM files: cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fluxgate-webhook")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "webhook.crt", directory / "webhook.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def admission_review(obj: dict) -> dict:
    group, _, version = obj["apiVersion"].rpartition("/")
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "resource": {"group": group, "version": version, "resource": obj["kind"].lower() + "s"},
        "name": obj["metadata"]["name"], "namespace": "default", "operation": "CREATE",
        "userInfo": {"username": "tester"}, "object": obj, "oldObject": None, "dryRun": False}}


def validation_message(obj: dict) -> str:
    """What ``fluxgate validate`` and translation say about ``obj``."""
    with pytest.raises(validation.Invalid) as err:
        validation.parse(KObject(obj, "x.yaml", 1))
    return str(err.value)


def test_controller_webhook_denies_what_translation_would_reject(tmp_path, kubeapi,
                                                                  controller_factory):
    cert, key = self_signed(tmp_path)
    ctl = controller_factory("ctl-a", FLUXGATE_WEBHOOK_CERT=cert, FLUXGATE_WEBHOOK_KEY=key,
                             FLUXGATE_WEBHOOK_ADDRESS="127.0.0.1")
    good = web("web")
    bad_path = route("bad", [{"matches": [{"path": {"type": "PathPrefix", "value": "api"}}],
                              "backendRefs": [{"name": "a", "port": 80}]}])
    bad_canary = {"apiVersion": "fluxgate.io/v1alpha3", "kind": "FluxGateRoute",
                  "metadata": {"name": "canary", "namespace": "default"},
                  "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
                      "backendRefs": [{"name": "a", "port": 80}],
                      "canary": {"weight": 101, "backendRefs": [{"name": "b", "port": 80}]}}]}}

    conn = http.client.HTTPSConnection("127.0.0.1", ctl.webhook_port, timeout=5,
                                       context=ssl.create_default_context(cafile=cert))
    try:
        def post(obj: dict) -> dict:
            body = admission_review(obj)
            conn.request("POST", "/validate", body=json.dumps(body),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200
            answer = json.loads(resp.read())
            assert answer["kind"] == "AdmissionReview"
            assert answer["response"]["uid"] == body["request"]["uid"]
            return answer["response"]

        assert post(good)["allowed"] is True
        for obj in (bad_path, bad_canary):
            response = post(obj)
            assert response["allowed"] is False
            assert response["status"] == {"code": 422, "reason": "Invalid",
                                          "message": validation_message(obj)}
        assert "spec.rules[0]" in post(bad_path)["status"]["message"]
    finally:
        conn.close()
    assert ctl.metric("fluxgate_webhook_reviews_total", '{allowed="false"}') == 3
    assert ctl.metric("fluxgate_webhook_reviews_total", '{allowed="true"}') == 1


# --- (d) Ingress status -----------------------------------------------------------------------

INGRESSES = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
STALE_LB = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}  # left by an earlier controller
NGINX_LB = {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}  # ingress-nginx's own


def ingress_class(name: str, controller: str) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": name},
            "spec": {"controller": controller}}


def ingress(name: str, cls: str, status: dict, annotations: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": "default", "annotations": annotations or {}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta,
            "spec": {"ingressClassName": cls, "rules": [{"host": f"{name}.example", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "a", "port": {"number": 80}}}}]}}]},
            "status": status}


def ingress_status(api: KubeAPIProcess, name: str) -> tuple[dict, str]:
    obj = api_get(api, f"{INGRESSES}/{name}")
    return obj.get("status") or {}, obj["metadata"]["resourceVersion"]


@pytest.mark.parametrize("address, ours, writes", [
    ("203.0.113.7", {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}, 2),
    ("lb.example.com", {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}, 2),
    (None, STALE_LB, 0),  # unset: Ingress status is left alone
], ids=["ip", "hostname", "unset"])
def test_controller_ingress_status_is_the_address_setting_for_its_class_only(
        kubeapi, controller_factory, address, ours, writes):
    for obj in [*objects(8080, {"a": [18080]}, [])[1:],  # the Service and its EndpointSlice
                ingress_class("fluxgate", "fluxgate.io/ingress-controller"),
                ingress_class("nginx", "k8s.io/ingress-nginx"),
                ingress("ours", "fluxgate", STALE_LB),
                ingress("bad", "fluxgate", STALE_LB, {"fluxgate.io/no-such-annotation": "1"}),
                ingress("theirs", "nginx", NGINX_LB)]:
        kubeapi.apply(obj)
    _, theirs_rv = ingress_status(kubeapi, "theirs")
    env = {"FLUXGATE_INGRESS_STATUS_ADDRESS": address} if address else {}
    ctl = controller_factory("ctl-a", FLUXGATE_RESYNC_SECONDS="1", **SHORT_LEASE, **env)

    eventually(lambda: ctl.metric("fluxgate_controller_leader") == 1, what="leadership")
    eventually(lambda: ctl.metric("fluxgate_status_passes_total", '{kind="full"}') >= 1,
               what="a full status pass")
    # Accepted: the configured address. Rejected (a bad annotation): no address, the
    # stale one removed. Unset: both left as they were.
    eventually(lambda: ingress_status(kubeapi, "ours")[0] == ours, what="our Ingress's status")
    eventually(lambda: ingress_status(kubeapi, "bad")[0] == ({"loadBalancer": {}} if writes else STALE_LB),
               what="the rejected Ingress's status")
    eventually(lambda: ctl.metric("fluxgate_status_writes_total") == writes, what=f"{writes} writes")
    rvs = {name: ingress_status(kubeapi, name)[1] for name in ("ours", "bad")}

    # Settled: the next full passes (every second) re-read everything and write nothing.
    full = ctl.metric("fluxgate_status_passes_total", '{kind="full"}')
    eventually(lambda: ctl.metric("fluxgate_status_passes_total", '{kind="full"}') >= full + 2,
               timeout=6, what="two more full passes")
    assert ctl.metric("fluxgate_status_writes_total") == writes
    assert {name: ingress_status(kubeapi, name)[1] for name in ("ours", "bad")} == rvs
    # Another controller's Ingress: never written, whatever the setting.
    assert ingress_status(kubeapi, "theirs") == (NGINX_LB, theirs_rv)
    status = json.loads(ctl.admin("/debug/status")[1])
    assert any("Ingress default/theirs ignored" in note for note in status["notes"]), status["notes"]


# --- (e) the API server absent, or dying under the leader ---------------------------------------

def hold_port(port: int) -> socket.socket:
    """Bind ``port`` without listening, as ``reserve_port`` does: connections are
    refused, and no bind(0) or outgoing connection gets the port until it is closed."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    return s


@pytest.fixture
def kubeapi_on():
    """``make(port, *args)``: an API server process on that exact port, stopped at the end."""
    started: list[KubeAPIProcess] = []

    def make(port: int, *args: str) -> KubeAPIProcess:
        deadline = time.monotonic() + 5
        while True:
            api = KubeAPIProcess("--bookmark-interval", "60", *args, port=port)
            started.append(api)
            try:
                api.start()
                break
            except RuntimeError:  # the port briefly in use (a connection in between): again
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        assert api.port == port
        return api

    yield make
    for api in started:
        api.stop()


def test_controller_without_an_api_keeps_running_says_why_and_starts_once_it_answers(
        tmp_path, controllers, kubeapi_on):
    port, hold = reserve_port()
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", port)
        ctl = controllers(kubeconfig, "ctl-a", ready=False, FLUXGATE_RESYNC_SECONDS="1", **SHORT_LEASE)
        waiting = (f"waiting for the initial lists from the Kubernetes API at http://127.0.0.1:{port}: "
                   f"connection refused (GatewayClass, Gateway, HTTPRoute and 8 more)")
        eventually(lambda: ctl.admin("/readyz") == (503, waiting.encode() + b"\n"),
                   what="/readyz to say what it waits for")
        eventually(lambda: "leader election: attempt failed" in ctl.log(), what="the elector's error")
        time.sleep(1.0)  # more than three retry periods (0.3 s): no more lines, no exit
        log = ctl.log()
        assert ctl.proc.poll() is None
        assert ctl.admin("/healthz")[0] == 200
        assert ctl.metric("fluxgate_kubernetes_synced") == 0
        assert ctl.metric("fluxgate_controller_leader") == 0
        # Each failing loop says so once, naming the API and the error.
        assert log.count("leader election: attempt failed") == 1, log
        assert f"api=http://127.0.0.1:{port} error=connection refused" in log
        watches = len(json.loads(ctl.admin("/debug/watches")[1]))
        assert log.count("Kubernetes watch failed; retrying with back-off") == watches, log
        assert "Traceback" not in log
    finally:
        hold.close()

    api = kubeapi_on(port)
    apply_world(api, [web("web")])
    ctl.wait_ready(timeout=15)
    eventually(lambda: route_conditions(api, "web") == ACCEPTED, timeout=10, what="the route's status")
    assert holder(api) == "ctl-a"
    log = ctl.log()
    assert "leader election: the API answers again" in log
    assert "Kubernetes watch works again" in log


def test_controller_leader_steps_down_while_the_api_is_gone_and_leads_again_when_it_returns(
        kubeapi, controller_factory, kubeapi_on):
    apply_world(kubeapi, [web("web")])
    ctl = controller_factory("ctl-a", FLUXGATE_RESYNC_SECONDS="1", FLUXGATE_RELIST_SECONDS="1",
                             **SHORT_LEASE)
    eventually(lambda: route_conditions(kubeapi, "web") == ACCEPTED, what="the route's status")
    assert ctl.metric("fluxgate_controller_leader") == 1
    port = kubeapi.port
    os.kill(kubeapi.pid, signal.SIGKILL)  # a crash: watches and connections die with it
    kubeapi.proc.wait(timeout=5)
    hold = hold_port(port)
    try:
        # The Lease cannot be renewed: within the renew deadline (1.5 s) the leader
        # stops believing it leads (no status without a lease) and stays a candidate.
        eventually(lambda: ctl.metric("fluxgate_controller_leader") == 0, timeout=5,
                   what="the leader to step down")
        eventually(lambda: "could not renew within the deadline; stepping down" in ctl.log(),
                   what="the elector to say it stepped down")
        log = ctl.log()
        assert log.count("leader election: attempt failed") == 1, log  # not once per retry period
        assert "Traceback" not in log
        assert ctl.proc.poll() is None
        assert ctl.admin("/readyz") == (200, b"ready (follower)\n")  # the webhook needs no API
    finally:
        hold.close()

    # A new API server on the same address, with an empty store (as after a restore
    # from an old backup): the controller re-lists (FLUXGATE_RELIST_SECONDS: a watch
    # resumed from our newer resourceVersion cannot see what the store recreated),
    # leads again, writes status there.
    api = kubeapi_on(port, "--rv-wait", "0.3")
    apply_world(api, [web("web"), web("late")])
    eventually(lambda: route_conditions(api, "web") == ACCEPTED == route_conditions(api, "late"),
               timeout=15, what="status written through the new API server")
    assert holder(api) == "ctl-a"
    assert ctl.metric("fluxgate_controller_leader") == 1
    assert ctl.metric("fluxgate_controller_terms_total") == 2
    assert "leader election: the API answers again" in ctl.log()
