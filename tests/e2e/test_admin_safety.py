"""The admin server's safety rules: /debug/* answers loopback only unless
FLUXGATE_DEBUG_TOKEN is set (then a bearer token), probes and /metrics answer
everyone, and the token shows up in no page and no log line.

"Another machine" is this one's own non-loopback address: the admin server is
bound to 0.0.0.0 and the client binds its socket to that address, so the
server sees a peer that is not loopback. Ports are free ones, as everywhere.
"""

from __future__ import annotations

import http.client
import socket

import pytest

from control.servers.admin import is_loopback
from tests.e2e.gateway import objects, request, route, write_config
from tests.e2e.test_controller import controller_factory, controllers, kubeapi  # noqa: F401 (fixtures)

TOKEN = "s3cret-debug-token-7f1c"  # distinctive: a stray copy anywhere is found by a substring test
DEBUG_PAGES = ("/debug/config", "/debug/status", "/debug/workers", "/debug/route?host=example.com&path=/x")


@pytest.mark.parametrize("peer, loopback", [
    (("127.0.0.1", 5000), True),
    (("127.1.2.3", 5000), True),  # all of 127.0.0.0/8
    (("::1", 5000, 0, 0), True),
    (("::ffff:127.0.0.1", 5000, 0, 0), True),  # an IPv4 client of a dual-stack socket
    ("127.0.0.1", True),
    (("10.0.0.7", 5000), False),
    (("192.0.2.2", 5000), False),
    (("0.0.0.0", 5000), False),
    (("::", 5000, 0, 0), False),
    (("::ffff:10.0.0.7", 5000, 0, 0), False),
    (("fe80::1%eth0", 5000, 0, 2), False),
    (("2001:db8::1", 5000, 0, 0), False),
    (("localhost", 5000), False),  # a peer is an address, never a name
    (("not an address", 5000), False),
    ("", False),  # a Unix socket's peername
    (None, False),
    ((), False),
])
def test_is_loopback_classifies_ipv4_ipv6_and_mapped_peers(peer, loopback):
    assert is_loopback(peer) is loopback


def outside_address() -> str:
    """A non-loopback IPv4 address of this machine (the route to a non-routable
    address picks it; no packet is sent), or skip."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            address = ""
    if not address or is_loopback(address) or address == "0.0.0.0":
        pytest.skip("this machine has no non-loopback IPv4 address to act as another client")
    return address


def admin_get(port: int, path: str, source: str = "127.0.0.1",
              headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request to the admin server at ``source``:``port``, sent from ``source``."""
    conn = http.client.HTTPConnection(source, port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def world(tmp_path, echo_factory, port):
    """A config of one route to one echo backend, on ``port``."""
    a = echo_factory("a")
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, objects(port, {"a": [a.port]}, [route("r", [
        {"matches": [{"path": {"type": "Exact", "value": "/x"}}], "backendRefs": [{"name": "a", "port": 80}]}])]))
    return cfg


def test_debug_answers_loopback_only_without_a_token_while_probes_and_metrics_stay_open(
        world, gateway_factory):
    outside = outside_address()
    gw = gateway_factory(world, FLUXGATE_ADMIN_ADDRESS="0.0.0.0")
    assert "/debug/* answers loopback only" in gw.log()

    loopback = {"/debug/config": 200, "/debug/status": 200, "/debug/workers": 200,
                "/debug/route?host=example.com&path=/x": 200, "/debug/nope": 404}
    for path, expected in loopback.items():
        assert admin_get(gw.admin_port, path)[0] == expected, path  # loopback: as before
        code, _, body = admin_get(gw.admin_port, path, outside)
        assert code == 403, path
        assert b"loopback only unless FLUXGATE_DEBUG_TOKEN is set" in body
    # A token is not asked for while none is configured: a guess changes nothing.
    assert admin_get(gw.admin_port, "/debug/config", outside, {"Authorization": "Bearer "})[0] == 403
    assert admin_get(gw.admin_port, "/debug/config", outside, {"Authorization": "Bearer x"})[0] == 403

    for path in ("/healthz", "/readyz", "/metrics"):
        assert admin_get(gw.admin_port, path, outside)[0] == 200, path
    assert b"fluxgate_workers" in admin_get(gw.admin_port, "/metrics", outside)[2]

    # The 404 list of routes names /debug/* only to those who may use it.
    code, _, body = admin_get(gw.admin_port, "/nope", outside)
    assert code == 404 and b"/metrics" in body and b"/debug" not in body
    assert b"/debug/config" in admin_get(gw.admin_port, "/nope")[2]


def test_debug_from_another_address_needs_the_bearer_token(world, gateway_factory):
    outside = outside_address()
    gw = gateway_factory(world, FLUXGATE_ADMIN_ADDRESS="0.0.0.0", FLUXGATE_DEBUG_TOKEN=TOKEN)
    assert "/debug/* answers loopback, and other addresses with the bearer token" in gw.log()

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"},
                    {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}, {"X-Debug-Token": TOKEN}):
        code, resp_headers, body = admin_get(gw.admin_port, "/debug/config", outside, headers)
        assert code == 401, headers
        assert resp_headers["www-authenticate"] == "Bearer"
        assert TOKEN.encode() not in body

    for scheme in ("Bearer", "bearer"):  # the scheme is case-insensitive
        code, _, body = admin_get(gw.admin_port, "/debug/config", outside,
                                  {"Authorization": f"{scheme} {TOKEN}"})
        assert code == 200 and b'"generation": 1' in body
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert admin_get(gw.admin_port, "/debug/nope", outside, auth)[0] == 404
    assert b"/debug/config" in admin_get(gw.admin_port, "/nope", outside, auth)[2]
    assert b"/debug" not in admin_get(gw.admin_port, "/nope", outside)[2]

    # Loopback needs no token; probes and metrics need none from anywhere.
    assert admin_get(gw.admin_port, "/debug/config")[0] == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert admin_get(gw.admin_port, path, outside)[0] == 200, path


def test_debug_token_never_appears_in_debug_pages_metrics_or_the_log(world, gateway_factory, port):
    outside = outside_address()
    gw = gateway_factory(world, FLUXGATE_ADMIN_ADDRESS="0.0.0.0", FLUXGATE_DEBUG_TOKEN=TOKEN)
    assert request(port, "/x")[0] == 200  # some traffic, so the pages and metrics are not empty
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # Every /debug page there is (the 404 lists them), from loopback and with the token.
    listed = admin_get(gw.admin_port, "/nope")[2].decode().split("try ", 1)[1].strip().split(", ")
    pages = {p for p in listed if p.startswith("/debug/")} | set(DEBUG_PAGES)
    assert {"/debug/config", "/debug/status", "/debug/workers", "/debug/route"} <= pages
    for page in sorted(pages) + ["/metrics", "/healthz", "/readyz"]:
        for source, headers in (("127.0.0.1", {}), (outside, auth)):
            code, resp_headers, body = admin_get(gw.admin_port, page, source, headers)
            assert code in (200, 400), (page, code)  # /debug/route without ?path= is a 400
            assert TOKEN.encode() not in body, page
            assert TOKEN not in str(resp_headers), page
    assert TOKEN not in gw.log()


def test_admin_on_loopback_logs_nothing_about_debug_access(world, gateway_factory):
    gw = gateway_factory(world)  # FLUXGATE_ADMIN_ADDRESS=127.0.0.1: nobody else can reach it
    assert gw.admin("/debug/config")[0] == 200
    assert "/debug/*" not in gw.log()


def test_controller_debug_pages_follow_the_same_rules(controller_factory):  # noqa: F811 (a fixture)
    outside = outside_address()
    ctl = controller_factory("ctl-a", FLUXGATE_ADMIN_ADDRESS="0.0.0.0", FLUXGATE_DEBUG_TOKEN=TOKEN)
    assert "/debug/* answers loopback, and other addresses with the bearer token" in ctl.log()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for page in ("/debug/status", "/debug/watches"):
        assert admin_get(ctl.admin_port, page)[0] == 200
        code, headers, _ = admin_get(ctl.admin_port, page, outside)
        assert code == 401 and headers["www-authenticate"] == "Bearer"
        code, _, body = admin_get(ctl.admin_port, page, outside, auth)
        assert code == 200 and TOKEN.encode() not in body
    code, _, body = admin_get(ctl.admin_port, "/metrics", outside)
    assert code == 200 and TOKEN.encode() not in body
    assert TOKEN not in ctl.log()
