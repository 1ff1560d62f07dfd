"""The Kubernetes source: list + watch of every kind FluxGate reads.

It offers the Runner what ``FileSource`` offers (``fingerprint()``, ``load()``
and ``changes()``), so the rest of the pipeline cannot tell the two apart: the
objects go through the same ``ObjectCache``, which decides whether a change
matters to translation (a status-only change of a route does not).

It wires the parts: one ``Reflector`` (reflector.py) per watch of the plan
(plan.py), each in its own thread, all writing into one ``Store``
(store.py), which keeps the Secret references (secrets.py). Rules (what must
stay true):

* Never a half-listed world. ``synced`` is False until every watch's first
  list has succeeded; the Runner publishes no table before. After that a
  broken watch keeps its last objects (the live table keeps serving) while
  it retries. "initial lists complete" is logged, and ``on_change`` called
  for it, exactly once.
* ``fingerprint()`` is the store's generation: it changes exactly when an
  event or re-list changed an object that can matter.
* ``on_change`` (given to ``start``) is called from a watch thread after
  every fingerprint change and once when the initial lists are complete; it
  must be thread-safe (the Runner passes ``loop.call_soon_threadsafe``).
* ``close`` ends every thread within its timeout: it sets the stop event and
  cuts every open stream, so no thread stays blocked in a read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Hashable

from kubernetes import client
from kubernetes import config as kubeconfig

from control.retry import Backoff
from control.sources.events import Changes
from control.sources.files import Loaded
from control.sources.kubernetes.plan import Settings, WatchSpec, plan
from control.sources.kubernetes.reflector import BACKOFF_BASE, BACKOFF_CAP, LIST_LIMIT, Reflector
from control.sources.kubernetes.store import Store

log = logging.getLogger("fluxgate.kubernetes")


class KubernetesSource:
    """List + watch the Kubernetes API; ``fingerprint``/``load`` like FileSource."""

    def __init__(self, configuration: client.Configuration, settings: Settings = Settings(), *,
                 specs: list[WatchSpec] | None = None, list_limit: int = LIST_LIMIT,
                 backoff_base: float = BACKOFF_BASE, backoff_cap: float = BACKOFF_CAP) -> None:
        """``configuration``: the client's (host, credentials, TLS); its connection
        pool is enlarged to hold one connection per watch plus room for lists.
        ``specs``: the watches to run (default ``plan(settings)``; the controller
        passes its wider plan); ``settings.resync_seconds`` applies to them all."""
        self.settings = settings
        self.list_limit = list_limit
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        specs = plan(settings) if specs is None else specs
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0,
                                                    len(specs) + 4)
        configuration.retries = False  # our back-off retries, and logs once per streak
        self.api_client = client.ApiClient(configuration)
        self._store = Store()
        self._stopping = threading.Event()
        self._watches = [
            Reflector(spec, self._store, self.api_client, settings=settings, list_limit=list_limit,
                      backoff=Backoff(backoff_base, backoff_cap), stopping=self._stopping,
                      notify=self._notify, listed=self._initial_lists_done)
            for spec in specs]
        self._threads: list[threading.Thread] = []
        self._on_change: Callable[[], None] = lambda: None
        self._synced_at = 0.0
        self._started_at = 0.0

    def __repr__(self) -> str:
        return f"KubernetesSource({self.host!r})"

    @property
    def host(self) -> str:
        return self.api_client.configuration.host

    @classmethod
    def from_config(cls, cfg) -> "KubernetesSource":
        """A source for ``cfg`` (FLUXGATE_KUBECONFIG, else in-cluster, else
        $KUBECONFIG or ~/.kube/config). Raises ``ConfigError`` when none loads."""
        from control.config import ConfigError

        configuration = client.Configuration()
        try:
            if cfg.kubeconfig:
                where = f"FLUXGATE_KUBECONFIG={cfg.kubeconfig!r}"
                if not os.path.isfile(cfg.kubeconfig):
                    raise ConfigError(f"{where}: no such file")
                kubeconfig.load_kube_config(config_file=cfg.kubeconfig,
                                            client_configuration=configuration)
            elif _in_cluster():
                where = "in-cluster (service account)"
                kubeconfig.load_incluster_config(client_configuration=configuration)
            else:
                where = f"{kubeconfig.KUBE_CONFIG_DEFAULT_LOCATION} (not in a cluster)"
                kubeconfig.load_kube_config(client_configuration=configuration)
        except ConfigError:
            raise
        except Exception as exc:  # any reason, reported at start with where it came from
            raise ConfigError(f"cannot load the Kubernetes client configuration from {where}: "
                              f"{exc}") from None
        return cls(configuration, Settings.from_config(cfg))

    # --- life cycle -----------------------------------------------------------------

    def start(self, on_change: Callable[[], None] | None = None) -> None:
        """Start one thread per watch; ``on_change`` is called from them."""
        if on_change is not None:
            self._on_change = on_change
        self._started_at = time.monotonic()
        for w in self._watches:
            name = f"kube-{w.spec.kind.kind}-{w.spec.namespace or 'all'}"
            thread = threading.Thread(target=w.run, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop every watch (open streams are cut) and wait for the threads."""
        self._stopping.set()
        for w in self._watches:
            w.cut()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        self.api_client.close()

    # --- what the Runner reads ------------------------------------------------------

    @property
    def synced(self) -> bool:
        """Every watch's first list has succeeded."""
        return all(w.synced for w in self._watches)

    def waiting(self) -> str:
        """Why not synced yet ("" when synced), for /readyz: each error with its watches."""
        by_error: dict[str, list[str]] = {}
        for w in self._watches:
            if not w.synced:
                by_error.setdefault(w.error or "not listed yet", []).append(str(w.spec))
        if not by_error:
            return ""
        parts = []
        for error, names in by_error.items():
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            parts.append(f"{error} ({', '.join(names[:3])}{more})")
        return f"waiting for the initial lists from the Kubernetes API at {self.host}: " + "; ".join(parts)

    def fingerprint(self) -> Hashable:
        """Changes whenever an object that can matter changed."""
        return self._store.generation

    def load(self) -> Loaded:
        return self._store.load()

    def changes(self) -> Changes:
        """What changed since the last call (the first call: every object), as
        ``load()`` would show it: ``upserts`` are the objects to (re)read,
        ``deletes`` those gone (their last version, for the key). Applying every
        ``changes()`` in turn to an ``ObjectCache`` (``apply_changes``) leaves it
        as ``apply(load())`` would. Cost: the changed objects, not all of them."""
        return self._store.changes()

    def describe(self) -> list[dict]:
        return [w.describe() for w in self._watches]

    # --- called from the watch threads ----------------------------------------------

    def _notify(self) -> None:
        self._on_change()

    def _initial_lists_done(self) -> bool:
        """After a watch's list: True exactly once, when it made every watch synced."""
        with self._store.lock:
            complete = not self._synced_at and self.synced
            if complete:
                self._synced_at = time.monotonic()
        if complete:
            log.info("initial lists complete", extra={"fields": {
                "watches": len(self._watches), "objects": self._store.count(),
                "seconds": round(self._synced_at - self._started_at, 3)}})
        return complete


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
