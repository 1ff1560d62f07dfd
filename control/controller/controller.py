"""``fluxgate controller``: the control-plane Deployment (status, admission, one leader).

Several replicas run; each lists and watches every shard's objects, translates
them like a data-plane pod would, and serves the validating admission webhook.
One of them, the leader by a coordination.k8s.io/v1 Lease, writes status.

Rules:

* The same pipeline as ``fluxgate run`` (control/pipeline.py) up to the
  StatusReport: KubernetesSource → ObjectCache → ``translate`` after the
  hold-off (FLUXGATE_HOLDOFF_MS, at most FLUXGATE_HOLDOFF_MAX_MS after the
  first change; trailing edge only), in the pipeline's build thread so the
  loop keeps serving admin and webhook requests meanwhile, with
  ``default_class=None`` (a GatewayClass object is
  required) and no shard filter: every Gateway of every GatewayClass whose
  controllerName is FluxGate's, every Ingress of an IngressClass of ours.
  FLUXGATE_WATCH_NAMESPACES still limits what is watched. No ring, no
  workers, nothing published.
* Only the leader writes (``StatusWriter(allowed=elector.is_leader)``: a
  leader that loses the Lease mid-pass stops at the next object). A pass runs
  after every translation, one at a time, in a thread (``asyncio.to_thread``),
  so the loop keeps serving admin and webhook requests. When this replica
  starts leading, the writer forgets what it settled and runs a full pass (it
  re-reads every object, writes only what differs); a full pass also runs
  every FLUXGATE_RESYNC_SECONDS and repairs status that someone else changed.
* Followers run the same source and translation (a warm cache), so a new
  leader's first pass starts at once, within one lease duration of the old
  leader's last renewal.
* Every replica serves the webhook (webhook.py) when FLUXGATE_WEBHOOK_CERT and
  FLUXGATE_WEBHOOK_KEY are set; the admin server (FLUXGATE_ADMIN_PORT)
  serves /healthz, /readyz (every initial list done and the webhook, if
  configured, listening), /metrics and /debug/status, /debug/watches.
* The API may be unreachable or answer errors at any time; nothing here
  exits for it. Watches retry with back-off and /readyz says what the
  initial lists wait for (source); the elector retries every retry period and
  a leader that cannot renew within the renew deadline steps down (no status
  is written without a lease) and stays a candidate, so it leads again once
  the API answers (leader.py). A status pass that failed for some objects is
  tried again with exponential back-off (``PASS_BACKOFF_BASE`` doubling to
  ``PASS_BACKOFF_CAP``, with jitter), never in a tight loop: a missing RBAC
  rule or a 500 must not turn the leader into a load generator. A new term's
  first pass does not wait for the back-off.
* SIGTERM/SIGINT: the elector steps down and releases the Lease (a follower
  takes over at its next retry), a pass under way finishes or stops at its
  next write, then everything closes.

Theory of operation: one asyncio loop owns all state but what a build
reads and writes (the pipeline's); watch threads, the elector's thread and
the build thread only wake it (``call_soon_threadsafe``). The loop's state
machine: fingerprint changed → arm the hold-off → at its end a build loads
the cache and translates if anything mattered → ask for a pass → start it
when leading and no pass runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import ssl
import time

from kubernetes import client
from prometheus_client.core import CounterMetricFamily

from control.metrics import config_errors, counter, gauge
from control.servers.admin import Admin
from control.config import Config, ConfigError
from control.controller.leader import LeaderElector
from control.sources import kubernetes as kube
from control.controller.status_writer import PassResult, StatusWriter
from control.holdoff import Holdoff
from control.pipeline import Build, Pipeline, tune_process
from control.retry import backoff_delay
from control.servers.webhook import Webhook

log = logging.getLogger("fluxgate.controller")

LEASE_NAME = "fluxgate-controller"
EXIT_CONFIG = 2
STOP_PASS_WAIT = 10.0  # on stop, how long a pass under way may take to finish
PASS_BACKOFF_BASE = 0.5  # after a pass with failures: the first retry within this (s)
PASS_BACKOFF_CAP = 30.0


def controller_plan(settings: kube.Settings) -> list[kube.WatchSpec]:
    """The watches of the controller: a shard's (``kube.plan``) widened to every shard.

    Every GatewayClass (translate accepts those whose controllerName is ours),
    every Ingress and every IngressClass (translate keeps the Ingresses of
    classes whose controller is ours).
    """
    out = []
    for spec in kube.plan(dataclasses.replace(settings, gateways=())):
        if spec.kind in (kube.GATEWAY_CLASS, kube.INGRESS_CLASS):
            spec = dataclasses.replace(spec, field_selector="")
        elif spec.kind == kube.INGRESS:
            spec = dataclasses.replace(spec, keep=None, keep_doc="")
        out.append(spec)
    return out


class ControllerSource(kube.KubernetesSource):
    """A KubernetesSource that watches every shard's objects (``controller_plan``)."""

    def __init__(self, configuration: client.Configuration, settings: kube.Settings, **kw) -> None:
        super().__init__(configuration, settings, specs=controller_plan(settings), **kw)


class Controller:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.source = ControllerSource.from_config(cfg)
        configuration = self.source.api_client.configuration
        self.identity = cfg.controller_identity
        self.lease_namespace = cfg.controller_lease_namespace
        self._leader_client = client.ApiClient(configuration)
        self._status_client = client.ApiClient(configuration)
        try:
            self.elector = LeaderElector(
                client.CoordinationV1Api(self._leader_client), LEASE_NAME, self.lease_namespace,
                self.identity, lease_duration=cfg.lease_duration,
                renew_deadline=cfg.lease_renew_deadline, retry_period=cfg.lease_retry_period,
                on_started_leading=lambda: self._from_thread(self._started_leading),
                on_stopped_leading=lambda: self._from_thread(self._stopped_leading),
                on_new_leader=None)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.writer = StatusWriter(self._status_client,
                                   ingress_load_balancer=cfg.ingress_load_balancer,
                                   allowed=lambda: self.elector.is_leader)
        self.webhook: Webhook | None = None
        if cfg.webhook_cert:
            try:
                self.webhook = Webhook(cfg.webhook_address, cfg.webhook_port, cfg.webhook_cert,
                                       cfg.webhook_key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"FLUXGATE_WEBHOOK_CERT={cfg.webhook_cert!r} / FLUXGATE_WEBHOOK_KEY="
                                  f"{cfg.webhook_key!r}: cannot load the certificate and key: "
                                  f"{exc}") from None
        self.admin = Admin(self, cfg.admin_address, cfg.admin_port, collector=_Collector(self), debug={
            "/debug/status": self.debug_status, "/debug/watches": self.source.describe}, debug_token=cfg.debug_token)
        # Only what changed since the last build is parsed, and translation keeps
        # what it can (its memo), as in a data-plane pod: a change costs its own size.
        self.pipeline = Pipeline(
            self.source, Holdoff(cfg.holdoff_ms, cfg.holdoff_max_ms),
            translate_options={"default_class": None, "ingress_http_port": cfg.ingress_http_port},
            on_built=self._translated, on_idle=lambda: self._wake.set(),
            failure="translation failed; status stays as it is")
        self.translations = 0
        self.passes = 0
        self.full_passes = 0
        self.status_writes = 0
        self.status_conflicts = 0
        self.status_failed = 0
        self.last_pass: PassResult | None = None
        self._pass_wanted = False  # a translation no pass has written yet
        self._new_term = False  # started leading: forget, then a full pass
        self._next_full = 0.0
        self._pass_failures = 0  # passes in a row that failed for some object
        self._retry_at = 0.0  # no pass before this (back-off after failures)
        self._retry_full = False  # a full pass failed: its retry is a full one too
        self.pass_backoff_base = PASS_BACKOFF_BASE
        self.pass_backoff_cap = PASS_BACKOFF_CAP
        self._pass: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.exit_code = 0

    # --- life cycle ---------------------------------------------------------------------

    async def run(self) -> int:
        tune_process()
        self._loop = loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        try:
            if not await self._start_servers():
                return self.exit_code
            self.source.start(lambda: loop.call_soon_threadsafe(self._wake.set))
            self.elector.start()
            log.info("controller started", extra={"fields": {
                "identity": self.identity, "lease": f"{self.lease_namespace}/{LEASE_NAME}",
                "source": f"kubernetes {self.source.host}",
                "admin": f"{self.cfg.admin_address}:{self.cfg.admin_port}",
                "webhook": f"{self.cfg.webhook_address}:{self.webhook.port}" if self.webhook else "off"}})
            await self._run_loop()
        finally:
            await self._shutdown()
        return self.exit_code

    async def _start_servers(self) -> bool:
        servers = [("admin server", self.admin, f"{self.cfg.admin_address}:{self.cfg.admin_port}")]
        if self.webhook is not None:
            servers.append(("webhook", self.webhook, f"{self.cfg.webhook_address}:{self.cfg.webhook_port}"))
        for what, server, where in servers:
            try:
                await server.start()
            except OSError as exc:
                log.error(f"cannot start the {what}", extra={"fields": {
                    "address": where, "error": str(exc)}})
                self.exit_code = EXIT_CONFIG
                return False
        return True

    async def _run_loop(self) -> None:
        pipeline = self.pipeline
        while not self._stop.is_set():
            now = time.monotonic()
            pipeline.poll(now)
            due = pipeline.due()
            if due is not None and now >= due:
                pipeline.start()
            self._maybe_pass(now)
            wake = now + 1.0
            due = pipeline.due()
            if due is not None:
                wake = min(wake, due)
            if self.elector.is_leader and self.status is not None and self._pass is None:
                wake = min(wake, max(self._next_full, self._retry_at))
                if self._pass_wanted:
                    wake = min(wake, self._retry_at)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake - time.monotonic()))
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def _shutdown(self) -> None:
        log.info("stopping")
        self.pipeline.close()
        # Step down first: a pass under way stops at its next write.
        await asyncio.to_thread(self.elector.stop)
        if self._pass is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._pass), STOP_PASS_WAIT)
            except (asyncio.TimeoutError, Exception):
                pass
        if self.webhook is not None:
            self.webhook.close()
        self.admin.close()
        await asyncio.to_thread(self.source.close)
        self._leader_client.close()
        self._status_client.close()
        log.info("stopped")

    def _request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _from_thread(self, fn) -> None:
        """Run ``fn`` on the loop (the elector's callbacks come from its thread)."""
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(fn)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _started_leading(self) -> None:
        self._new_term = True
        self._wake.set()

    def _stopped_leading(self) -> None:
        self._wake.set()

    # --- source → report ------------------------------------------------------------------

    @property
    def status(self):
        """The last StatusReport (None before the first translation)."""
        return self.pipeline.status

    def _translated(self, build: Build) -> None:
        self.translations += 1
        self._pass_wanted = True

    # --- report → API (leader only) -------------------------------------------------------

    def _maybe_pass(self, now: float) -> None:
        if self._pass is not None or self.status is None or not self.elector.is_leader:
            return
        full = False
        if self._new_term:
            self._new_term = False
            self.writer.forget()  # safe: no pass runs
            self._pass_failures, self._retry_at = 0, 0.0
            full = True
        elif now < self._retry_at:
            return  # backing off after a failed pass
        elif now >= self._next_full or self._retry_full:
            full = True
        elif not self._pass_wanted:
            return
        self._pass_wanted = False
        if full:
            self._retry_full = False
            self._next_full = now + self.cfg.resync_seconds
        self._pass = asyncio.get_running_loop().create_task(self._write(self.status, full))

    async def _write(self, report, full: bool) -> None:
        try:
            result = await asyncio.to_thread(self.writer.write, report, full=full)
        except Exception:
            log.exception("status pass failed")
            result = None
        finally:
            self._pass = None
            self._wake.set()
        if result is not None:
            self.passes += 1
            self.full_passes += full
            self.status_writes += result.writes
            self.status_conflicts += result.conflicts
            self.status_failed += result.failed
            self.last_pass = result
        if result is None or result.failed:
            # Failed objects are not settled: try again, after a back-off. (A failed
            # object keeps the mark it had, so only a full pass retries a full one.)
            self._pass_wanted = self._pass_wanted or self.elector.is_leader
            self._retry_full = self._retry_full or full or result is None
            self._pass_failures += 1
            delay = self._backoff(self._pass_failures)
            self._retry_at = time.monotonic() + delay
            log.info("status pass incomplete; retrying with back-off", extra={"fields": {
                "failed": result.failed if result is not None else "all",
                "passes_failed": self._pass_failures, "retry_in_s": round(delay, 2)}})
        elif self._pass_failures:
            log.info("status pass complete again", extra={"fields": {
                "passes_failed": self._pass_failures}})
            self._pass_failures, self._retry_at = 0, 0.0

    def _backoff(self, failures: int) -> float:
        return backoff_delay(failures, self.pass_backoff_base, self.pass_backoff_cap)

    # --- what the admin server shows --------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if not self.source.synced:
            return False, self.source.waiting()
        if self.webhook is not None and self.webhook.server is None:
            return False, "the webhook is not listening yet"
        return True, f"ready ({'leader' if self.elector.is_leader else 'follower'})"

    def debug_status(self) -> dict:
        report = self.status.to_builtins() if self.status is not None else {"objects": [], "notes": []}
        last = dataclasses.asdict(self.last_pass) if self.last_pass is not None else None
        return {
            "identity": self.identity,
            "leader": self.elector.is_leader,
            "holder": self.elector.leader,
            "lease": f"{self.lease_namespace}/{LEASE_NAME}",
            "translations": self.translations,
            "passes": self.passes,
            "status_writes": self.status_writes,
            "last_pass": last,
            "config_errors": [str(p) for p in self.pipeline.problems()],
            **report,
        }


class _Collector:
    """The controller's numbers, read at scrape time."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    def collect(self):
        c = self.ctl
        yield gauge("fluxgate_controller_leader", "1 while this replica leads (writes status)",
                    1 if c.elector.is_leader else 0)
        yield counter("fluxgate_controller_terms", "Times this replica became the leader", c.elector.terms)
        yield counter("fluxgate_controller_lease_conflicts", "Lease writes lost to another replica (409)",
                      c.elector.conflicts)
        yield counter("fluxgate_controller_translations", "Translations of the watched objects", c.translations)
        yield config_errors(c.pipeline)
        m = CounterMetricFamily("fluxgate_status_passes", "Status passes", labels=["kind"])
        m.add_metric(["incremental"], c.passes - c.full_passes)
        m.add_metric(["full"], c.full_passes)
        yield m
        yield counter("fluxgate_status_writes", "Status writes that succeeded", c.status_writes)
        yield counter("fluxgate_status_conflicts", "Status writes answered 409 (re-read, retried)", c.status_conflicts)
        yield counter("fluxgate_status_failures", "Objects whose status could not be written", c.status_failed)
        yield gauge("fluxgate_kubernetes_synced", "1 once every watch has listed", 1 if c.source.synced else 0)
        if c.webhook is not None:
            m = CounterMetricFamily("fluxgate_webhook_reviews", "AdmissionReviews answered", labels=["allowed"])
            m.add_metric(["true"], c.webhook.reviews - c.webhook.denied)
            m.add_metric(["false"], c.webhook.denied)
            yield m
