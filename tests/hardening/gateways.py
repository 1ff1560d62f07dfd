"""Gateways for the hardening tests: one per settings profile, started on demand.

A profile is a few FLUXGATE_* settings on top of ``BASE_ENV``, with small
values so the tests are quick. Profiles are small on purpose - one feature
each - so a test names exactly the setting it needs, and a setting the
gateway does not know (it refuses to start on an unknown FLUXGATE_*
variable) fails only the tests of that feature: ``get`` raises GatewayDown
and the test fails with the gateway's own message.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.e2e.gateway import Gateway, objects, reserve_port, route, write_config

# Every process is told to finish quickly: tests stop them often.
BASE_ENV = {
    "FLUXGATE_DRAIN_SECONDS": "1",
    "FLUXGATE_UPSTREAM_CONNECT_TIMEOUT": "1",
    "FLUXGATE_LOG_LEVEL": "warning",
}

# The corpus's profiles (a case names one with "gateway:"; the default is "default").
PROFILES: dict[str, dict[str, str]] = {
    "default": {},
    "body-limit": {"FLUXGATE_MAX_BODY_BYTES": "1024"},
    "head-limits": {
        "FLUXGATE_MAX_REQUEST_LINE_BYTES": "1024",
        "FLUXGATE_MAX_HEADER_BYTES": "4096",
        "FLUXGATE_MAX_HEADER_COUNT": "20",
    },
    "underscore-drop": {"FLUXGATE_UNDERSCORE_HEADERS": "drop"},
    "underscore-allow": {"FLUXGATE_UNDERSCORE_HEADERS": "allow"},
    "slashes-keep": {"FLUXGATE_ESCAPED_SLASHES": "keep", "FLUXGATE_MERGE_SLASHES": "false"},
    "slashes-reject": {"FLUXGATE_ESCAPED_SLASHES": "reject"},
    "slashes-forward": {"FLUXGATE_ESCAPED_SLASHES": "unescape-forward"},
    "pipeline": {"FLUXGATE_MAX_PIPELINE": "2"},
}


class GatewayDown(RuntimeError):
    """A profile's gateway did not start (its settings do not exist yet)."""


class GatewaySet:
    """Gateways by profile over one set of backends and routes, started lazily.

    ``make_docs(port)`` returns the Kubernetes objects for a gateway on
    ``port``. Every gateway is stopped by ``stop()`` (a fixture finaliser).
    """

    def __init__(self, workdir: Path, make_docs, profiles: dict[str, dict[str, str]] = PROFILES,
                 workers: int = 2) -> None:
        self.workdir = workdir
        self.make_docs = make_docs
        self.profiles = profiles
        self.workers = workers
        self.started: dict[str, tuple[Gateway, int]] = {}
        self.failed: dict[str, str] = {}
        self._holders: list[socket.socket] = []
        self._all: list[Gateway] = []

    def get(self, profile: str) -> tuple[Gateway, int]:
        """(gateway, listener port) for ``profile``; GatewayDown if it cannot start."""
        if profile in self.started:
            return self.started[profile]
        if profile in self.failed:
            raise GatewayDown(self.failed[profile])
        env = {**BASE_ENV, **self.profiles[profile]}
        port, holder = reserve_port()
        self._holders.append(holder)
        cfg = self.workdir / f"gw-{profile}.yaml"
        write_config(cfg, self.make_docs(port))
        gw = Gateway(cfg, workers=self.workers, **env)
        self._all.append(gw)
        try:
            gw.start()
        except (RuntimeError, TimeoutError) as exc:
            lines = [ln for ln in str(exc).splitlines() if "error" in ln.lower()] or str(exc).splitlines()
            self.failed[profile] = f"profile {profile!r} does not start: {lines[0][:300] if lines else exc}"
            raise GatewayDown(self.failed[profile]) from None
        self.started[profile] = (gw, port)
        return gw, port

    def stop(self) -> None:
        for gw in self._all:
            gw.stop()
        for h in self._holders:
            h.close()


def corpus_docs(captures):
    """Routes the corpus is written against.

    Host example.com: /public (prefix) -> "public", /admin (prefix) -> "admin",
    everything else -> "main". Host public.example: only /public -> "public",
    so a path that normalises into /admin there has no route (404).
    """
    backend = lambda name: [{"name": name, "port": 80}]  # noqa: E731

    def make(port: int) -> list[dict]:
        return objects(port, {n: [c.port] for n, c in captures.by_name.items()}, [
            route("site", [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/public"}}], "backendRefs": backend("public")},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}], "backendRefs": backend("admin")},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backend("main")},
            ], hostnames=["example.com"]),
            route("public-only", [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/public"}}], "backendRefs": backend("public")},
            ], hostnames=["public.example"]),
        ])
    return make
