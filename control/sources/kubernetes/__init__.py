"""The Kubernetes source, in parts (each module's docstring holds its rules):

  source.py     ``KubernetesSource``: wires the parts; ``synced``, ``fingerprint``,
                ``load``, ``changes`` for the Runner and the controller
  plan.py       which watches a shard runs (``Settings``, ``WatchSpec``, ``plan``)
  reflector.py  one watch's list + watch loop: resourceVersion, bookmarks,
                410 re-list, resync, back-off (control/retry.py)
  store.py      the objects held, under one lock, and what changed since when
  secrets.py    which Secrets are referenced, and which are handed out
  fields.py     reading fields of raw objects that may hold anything

Data flows one way: reflector → store (→ secrets) → source → Runner. The names
below are the package's interface: code outside the package imports them from
here (``from control.sources.kubernetes import KubernetesSource``), not from
the modules, which may move; only the package's own tests reach into them.
"""

from control.sources.kubernetes.plan import (
    ENDPOINT_SLICE, FLUXGATE_ROUTE, GATEWAY, GATEWAY_CLASS, HTTP_ROUTE, INGRESS, INGRESS_CLASS,
    NAMESPACE, REFERENCE_GRANT, SECRET, SERVICE, Settings, WatchSpec, plan)
from control.sources.kubernetes.reflector import (
    BACKOFF_BASE, BACKOFF_CAP, CONNECT_TIMEOUT, LIST_LIMIT, LIST_READ_TIMEOUT, NOT_INSTALLED,
    WATCH_READ_GRACE, Gone, Interrupted, NotInstalled, WatchError, describe_error)
from control.sources.kubernetes.secrets import TLS_SECRET_TYPE, secret_refs
from control.sources.kubernetes.source import KubernetesSource
from control.sources.kubernetes.store import FILE

__all__ = [
    "BACKOFF_BASE", "BACKOFF_CAP", "CONNECT_TIMEOUT", "ENDPOINT_SLICE", "FILE", "FLUXGATE_ROUTE",
    "GATEWAY", "GATEWAY_CLASS", "Gone", "HTTP_ROUTE", "INGRESS", "INGRESS_CLASS", "Interrupted",
    "KubernetesSource", "LIST_LIMIT", "LIST_READ_TIMEOUT", "NAMESPACE", "NOT_INSTALLED",
    "NotInstalled", "REFERENCE_GRANT", "SECRET", "SERVICE", "Settings", "TLS_SECRET_TYPE",
    "WATCH_READ_GRACE", "WatchError", "WatchSpec", "describe_error", "plan",
    "secret_refs",
]
