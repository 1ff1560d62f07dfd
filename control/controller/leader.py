"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection.

``fluxgate controller`` runs as several replicas; exactly one (the leader)
writes status. This module decides which, with one Lease object that every
replica reads and writes through the official ``kubernetes`` client.

Rules:

* The Lease says who leads: ``holderIdentity``, ``leaseDurationSeconds``,
  ``acquireTime``, ``renewTime``, ``leaseTransitions`` (bumped when the
  holder changes). A candidate takes it only when it is free (no holder) or
  expired: ``renewTime + leaseDurationSeconds < now``, with the duration the
  holder wrote.
* Every write is a create, or a PUT that carries the ``resourceVersion`` that
  was read. Of candidates racing from the same version the API server lets one
  through and answers the others 409 (Conflict, or AlreadyExists on create);
  a loser only re-reads. So the API never says two holders at once.
* A leader *believes* it leads until ``renew_deadline`` after the moment it
  sent its last successful renewal (monotonic clock): ``is_leader`` turns
  False by itself when renewals stop succeeding, even while a call hangs.
  Because ``renew_deadline < lease_duration``, that belief ends before any
  other candidate may take the lease, so no two electors believe they lead at
  the same time, provided the replicas' clocks agree to within
  ``lease_duration - renew_deadline`` (5 s with the defaults; NTP does far
  better). A belief that ended is never revived by a late renewal: that term
  is over and the elector goes through acquisition again (``terms`` counts
  them), so within one term belief is one unbroken interval.
* ``stop()`` steps down first (``is_leader`` False, ``on_stopped_leading``
  runs), then releases: the holder is cleared with a one-second duration, so
  a follower takes over at its next retry instead of a lease duration later.
  ``stop(release=False)`` is what a crash looks like: the lease simply
  expires, and a follower takes over within one lease duration (plus a retry
  period) of the last renewal.
* Timing follows client-go: lease duration 15 s, renew deadline 10 s, retry
  period 2 s; ``lease_duration > renew_deadline > 1.2 * retry_period``.
  The leader renews every retry period; candidates poll every retry period
  plus up to 20 % jitter (client-go allows +120 %; less keeps failover close
  to one lease duration).

Theory of operation: one daemon thread per elector runs ``_run``: try to
acquire or renew, step down if the belief ran out, sleep. The client is
synchronous, so a thread (rather than an asyncio task) keeps the event loop
free of blocking calls. Callbacks (``on_started_leading``,
``on_stopped_leading``, ``on_new_leader(identity)``) run on that thread; they
must be quick and thread-safe (``loop.call_soon_threadsafe`` to reach an
asyncio loop). ``is_leader`` may be read from any thread, at any rate.

A leader whose renewals fail past the deadline steps down and becomes a
candidate again (client-go's ``Run`` returns instead; the controller may still
exit on ``on_stopped_leading`` if it prefers a clean restart). An unreachable
API is retried every retry period, as client-go does; it is logged once per
streak of failed attempts (a warning naming the API and the error), then at
debug level, and once more when the API answers again.

Deployment needs: RBAC ``get``, ``create``, ``update`` on ``leases``
(``coordination.k8s.io``) in the controller's namespace; the identity should be
the pod name (downward API ``metadata.name``) so ``kubectl get lease`` names
the leader; the lease name is one per controller deployment (e.g.
``fluxgate-controller``).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any, Callable, Optional

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from control.retry import jittered
from control.sources.kubernetes import describe_error

log = logging.getLogger("fluxgate.leader")

LEASE_DURATION = 15
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
JITTER = 0.2  # candidates poll every retry period plus up to this fraction
_JITTER_FACTOR = 1.2  # client-go: renew_deadline must exceed this * retry_period


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class LeaderElector:
    """One candidate for one Lease. ``start()``, read ``is_leader``, ``stop()``."""

    def __init__(
        self,
        api: client.CoordinationV1Api,
        name: str,
        namespace: str,
        identity: str,
        *,
        lease_duration: int = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
        request_timeout: float | None = None,
        on_started_leading: Optional[Callable[[], None]] = None,
        on_stopped_leading: Optional[Callable[[], None]] = None,
        on_new_leader: Optional[Callable[[str], None]] = None,
        wall_clock: Callable[[], datetime.datetime] = _utcnow,
    ) -> None:
        """``lease_duration`` is whole seconds (the Lease field is an integer).

        ``request_timeout``: per API call; default the retry period (at least
        1 s), never more than the renew deadline.
        """
        if not identity:
            raise ValueError("leader election: identity must not be empty")
        if int(lease_duration) != lease_duration or lease_duration < 1:
            raise ValueError("leader election: lease duration must be a whole number of seconds >= 1")
        if not lease_duration > renew_deadline:
            raise ValueError("leader election: lease duration must be greater than the renew deadline")
        if not renew_deadline > _JITTER_FACTOR * retry_period:
            raise ValueError(f"leader election: renew deadline must be greater than"
                             f" {_JITTER_FACTOR} * retry period")
        if retry_period <= 0:
            raise ValueError("leader election: retry period must be positive")
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = int(lease_duration)
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.request_timeout = request_timeout or min(max(retry_period, 1.0), renew_deadline)
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self._wall = wall_clock
        # Thread-owned state (written only by the elector's thread, or before start).
        self._lease: client.V1Lease | None = None  # last version read or written
        self._leading = False  # inside a term (on_started_leading ran, on_stopped not yet)
        self._leading_until = 0.0  # monotonic end of the belief, extended by renewals
        self._observed_holder: str | None = None
        self._failures = 0  # failed attempts in the current streak (logged once)
        self._attempt_failed = False
        self.terms = 0  # how many times this elector became leader
        self.conflicts = 0  # 409s met (lost races, stale versions)
        self._stop = threading.Event()
        self._release_on_stop = True
        self._thread: threading.Thread | None = None

    # -- what others read ---------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this elector leads; turns False on its own at the renew deadline."""
        return self._leading and time.monotonic() < self._leading_until

    @property
    def leader(self) -> str | None:
        """The holder as last read or written (None: free, or not read yet)."""
        return self._observed_holder

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "LeaderElector":
        if self._thread is not None:
            raise RuntimeError("leader election: already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"leader-{self.identity}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, release: bool = True, timeout: float | None = None) -> None:
        """Step down and end the thread; ``release`` clears the holder so a follower
        takes over at once (False: the lease just expires, as after a crash)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._release_on_stop = release
        self._stop.set()
        # The release may take a read and two writes after the attempt under way.
        thread.join(timeout if timeout is not None else self.request_timeout * 4 + 1)

    def wait_until_leading(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_leader:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.01, self.retry_period / 4))
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._attempt_failed = False
            try:
                self.try_acquire_or_renew()
            except (urllib3.exceptions.HTTPError, OSError) as exc:  # API unreachable, timeouts
                self._log_failure("attempt", exc)
            except Exception as exc:  # a bug or an unexpected answer must not end the election
                self._log_failure("attempt", exc, traceback=True)
            if not self._attempt_failed and self._failures:
                log.info("leader election: the API answers again", extra={"fields": {
                    "lease": self._lease_label, "failed_attempts": self._failures}})
                self._failures = 0
            if self._leading and time.monotonic() >= self._leading_until:
                log.warning("leader election: could not renew within the deadline; stepping down",
                            extra={"fields": {"lease": self._lease_label}})
                self._step_down()
            pause = self.retry_period if self._leading else jittered(self.retry_period, JITTER)
            self._stop.wait(pause)
        was_leading = self._leading
        self._step_down()
        if was_leading and self._release_on_stop:
            self._release()

    # -- one attempt -------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One round of client-go's tryAcquireOrRenew; True if this elector now leads.

        Called by the elector's thread; tests may call it directly on an elector
        that was not started.
        """
        sent = time.monotonic()  # before the write: the belief never outlives the lease
        now = self._wall()
        if self._leading and self._lease is not None:
            # Fast path: renew from the version we wrote last, no read first.
            try:
                self._write(self._lease, now)
                return self._renewed(sent)
            except ApiException as exc:
                if exc.status != 409:
                    self._log_failure("renew", exc)
                    return False
                self.conflicts += 1  # someone wrote the lease: read it and judge again
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace,
                                                   _request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status != 404:
                self._log_failure("read", exc)
                return False
            return self._create(now, sent)
        self._lease = lease
        holder = lease.spec.holder_identity if lease.spec else None
        self._observe(holder)
        if self._leading and holder != self.identity:
            self._step_down()  # someone else held it meanwhile: our term is over
        if holder and holder != self.identity and not self._expired(lease, now):
            return False
        try:
            self._write(lease, now)
        except ApiException as exc:
            if exc.status == 409:
                self.conflicts += 1  # another candidate won this round
            else:
                self._log_failure("acquire", exc)
            return False
        return self._renewed(sent)

    def _create(self, now: datetime.datetime, sent: float) -> bool:
        stamp = now.isoformat()
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration,
                     "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0},
        }
        try:
            self._lease = self.api.create_namespaced_lease(
                self.namespace, body, _request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status == 409:
                self.conflicts += 1  # created by another candidate first
            else:
                self._log_failure("create", exc)
            return False
        self._observe(self.identity)
        return self._renewed(sent)

    def _write(self, lease: client.V1Lease, now: datetime.datetime) -> None:
        """PUT ``lease`` with this elector as holder, from the version it was read at."""
        body = self.api.api_client.sanitize_for_serialization(lease)
        spec = body.setdefault("spec", {})
        stamp = now.isoformat()
        if spec.get("holderIdentity") != self.identity:  # a new holder (client-go counts from free too)
            spec["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = stamp
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = self.lease_duration
        spec["renewTime"] = stamp
        self._lease = self.api.replace_namespaced_lease(
            self.name, self.namespace, body, _request_timeout=self.request_timeout)
        self._observe(self.identity)

    def _renewed(self, sent: float) -> bool:
        if self._leading:
            if time.monotonic() >= self._leading_until:
                # Too late: the belief already ended (others may have seen the
                # lease expire). This term is over; the next round starts another.
                self._step_down()
                return False
            self._leading_until = sent + self.renew_deadline
            return True
        self._leading_until = sent + self.renew_deadline
        if time.monotonic() >= self._leading_until:
            return False  # the write took longer than the deadline: do not start a term
        self._leading = True
        self.terms += 1
        log.info("leader election: started leading",
                 extra={"fields": {"lease": self._lease_label, "identity": self.identity}})
        if self.on_started_leading:
            self.on_started_leading()
        return True

    def _step_down(self) -> None:
        if not self._leading:
            return
        self._leading = False
        self._leading_until = 0.0
        log.info("leader election: stopped leading",
                 extra={"fields": {"lease": self._lease_label, "identity": self.identity}})
        if self.on_stopped_leading:
            self.on_stopped_leading()

    def _release(self) -> None:
        """Clear the holder (client-go's release): a follower takes over at once."""
        for _ in range(2):  # one re-read on a conflict (a renewal of ours raced?)
            lease = self._lease
            if lease is None or lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            body = self.api.api_client.sanitize_for_serialization(lease)
            stamp = self._wall().isoformat()
            body["spec"].pop("holderIdentity", None)
            body["spec"].update(leaseDurationSeconds=1, renewTime=stamp, acquireTime=stamp)
            try:
                self._lease = self.api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self.request_timeout)
                self._observe(None)
                return
            except ApiException as exc:
                if exc.status != 409:
                    self._log_failure("release", exc, streak=False)
                    return
                self.conflicts += 1
                try:
                    self._lease = self.api.read_namespaced_lease(
                        self.name, self.namespace, _request_timeout=self.request_timeout)
                except ApiException as read_exc:
                    self._log_failure("release", read_exc, streak=False)
                    return
            except (urllib3.exceptions.HTTPError, OSError) as exc:  # the API may be gone
                self._log_failure("release", exc, streak=False)
                return

    # -- reading the lease -------------------------------------------------------------------

    @staticmethod
    def _expired(lease: client.V1Lease, now: datetime.datetime) -> bool:
        spec = lease.spec
        if spec is None or spec.renew_time is None or not spec.lease_duration_seconds:
            return True
        renewed = spec.renew_time
        if renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=datetime.timezone.utc)
        return renewed + datetime.timedelta(seconds=spec.lease_duration_seconds) < now

    def _observe(self, holder: str | None) -> None:
        holder = holder or None
        if holder == self._observed_holder:
            return
        self._observed_holder = holder
        if holder is not None and self.on_new_leader:
            self.on_new_leader(holder)

    @property
    def _lease_label(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _log_failure(self, what: str, exc: Any, traceback: bool = False, streak: bool = True) -> None:
        """Warn at the first failure of a streak; later ones are debug lines.
        ``streak=False``: a one-off (the release on stop), always a warning."""
        fields = {"lease": self._lease_label, "api": self._host, "error": describe_error(exc)}
        if not streak:
            log.warning(f"leader election: {what} failed", extra={"fields": fields})
            return
        self._attempt_failed = True
        self._failures += 1
        if self._failures == 1:
            log.warning(f"leader election: {what} failed; retrying every {self.retry_period:g}s",
                        exc_info=exc if traceback else None, extra={"fields": fields})
        else:
            log.debug(f"leader election: {what} failed again",
                      extra={"fields": {**fields, "failures": self._failures}})

    @property
    def _host(self) -> str:
        try:
            return self.api.api_client.configuration.host
        except AttributeError:
            return "?"
