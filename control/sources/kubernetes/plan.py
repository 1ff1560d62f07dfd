"""The plan: which list + watch calls one shard runs, and what each selects.

All namespaces unless FLUXGATE_WATCH_NAMESPACES lists some, then one
namespaced watch per namespace and kind:

  GatewayClass    cluster-wide; ``metadata.name=<FLUXGATE_GATEWAY_CLASS>``,
                  or every class when FLUXGATE_GATEWAYS names the Gateways
                  (they may be of any class; translate checks controllerName)
  Gateway         every Gateway. They are few, and a shard must see the
                  others to know that a route's parentRef to one is another
                  shard's (no status from us), not a missing Gateway (a
                  ``NoMatchingParent``). Which are ours is translate's call:
                  those of our class (the GatewayClass watch sees only ours),
                  or those FLUXGATE_GATEWAYS names (``translate(gateways=)``)
  HTTPRoute, FluxGateRoute (fluxgate.io/v1alpha3), ReferenceGrant (v1beta1),
  Service, EndpointSlice
                  every object (routes attach in translate)
  Ingress         every object, of which those naming another IngressClass
                  (``spec.ingressClassName`` or the legacy annotation) are
                  dropped here; class-less ones are kept (the default class)
  IngressClass    cluster-wide; ``metadata.name=<FLUXGATE_GATEWAY_CLASS>``
                  (a shard's IngressClass is named like its GatewayClass)
  Namespace       cluster-wide, or ``metadata.name=<ns>`` per namespace
                  (their labels serve ``allowedRoutes.namespaces.selector``)
  Secret          ``type=kubernetes.io/tls`` only (what listeners and
                  Ingress TLS can use; secrets.py says which of them count)

What must stay true: every kind the typed cache reads is watched, each at a
version the cache parses (tests/control/sources/kubernetes/test_plan.py), and
no two watches of a plan select the same objects. The controller widens this
plan to every shard's objects (control/controller/controller.py,
``controller_plan``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

from control.objects import kinds
from control.objects.kinds import Kind
from control.objects.resources import INGRESS_CLASS_ANNOTATION
from control.sources.kubernetes.fields import dig
from control.sources.kubernetes.secrets import TLS_SECRET_TYPE

GATEWAY_CLASS = kinds.BY_KIND["GatewayClass"]
GATEWAY = kinds.BY_KIND["Gateway"]
HTTP_ROUTE = kinds.BY_KIND["HTTPRoute"]
REFERENCE_GRANT = kinds.BY_KIND["ReferenceGrant"]
FLUXGATE_ROUTE = kinds.BY_KIND["FluxGateRoute"]
INGRESS = kinds.BY_KIND["Ingress"]
INGRESS_CLASS = kinds.BY_KIND["IngressClass"]
SERVICE = kinds.BY_KIND["Service"]
ENDPOINT_SLICE = kinds.BY_KIND["EndpointSlice"]
NAMESPACE = kinds.BY_KIND["Namespace"]
SECRET = kinds.BY_KIND["Secret"]


@dataclass(frozen=True)
class Settings:
    """What a shard watches (from FLUXGATE_GATEWAYS, _GATEWAY_CLASS, _WATCH_NAMESPACES)."""

    gateway_class: str = "fluxgate"
    gateways: tuple[str, ...] = ()  # "namespace/name"
    namespaces: tuple[str, ...] = ()  # () = all
    resync_seconds: float = 15.0
    relist_seconds: float = 600.0  # 0: never on a timer

    @classmethod
    def from_config(cls, cfg) -> "Settings":
        return cls(gateway_class=cfg.gateway_class, gateways=tuple(cfg.gateways),
                   namespaces=tuple(cfg.watch_namespaces), resync_seconds=cfg.resync_seconds,
                   relist_seconds=cfg.relist_seconds)


@dataclass(frozen=True)
class WatchSpec:
    """One list + watch: a kind, a namespace (None: all / cluster) and selectors."""

    kind: Kind
    namespace: str | None = None
    field_selector: str = ""
    keep: Callable[[dict], bool] | None = field(default=None, compare=False)
    keep_doc: str = ""  # what ``keep`` keeps, for describe()

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        sel = f" [{self.field_selector}]" if self.field_selector else ""
        return f"{self.kind.kind}{where}{sel}"


def plan(settings: Settings) -> list[WatchSpec]:
    """The watches of one shard (the module docstring says why each selects what)."""
    scopes: tuple[str | None, ...] = settings.namespaces or (None,)
    cls = settings.gateway_class
    specs = [WatchSpec(GATEWAY_CLASS, None, "" if settings.gateways else f"metadata.name={cls}")]
    specs += [WatchSpec(GATEWAY, ns) for ns in scopes]
    for kind in (HTTP_ROUTE, FLUXGATE_ROUTE, REFERENCE_GRANT, SERVICE, ENDPOINT_SLICE):
        specs += [WatchSpec(kind, ns) for ns in scopes]
    specs += [WatchSpec(INGRESS, ns, keep=functools.partial(_ingress_of_class, cls),
                        keep_doc=f"class {cls} or none") for ns in scopes]
    specs.append(WatchSpec(INGRESS_CLASS, None, f"metadata.name={cls}"))
    if settings.namespaces:
        specs += [WatchSpec(NAMESPACE, None, f"metadata.name={ns}") for ns in settings.namespaces]
    else:
        specs.append(WatchSpec(NAMESPACE))
    specs += [WatchSpec(SECRET, ns, f"type={TLS_SECRET_TYPE}") for ns in scopes]
    return specs


def _ingress_of_class(cls: str, raw: dict) -> bool:
    name = dig(raw, "spec", "ingressClassName")
    if name is None:
        name = dig(raw, "metadata", "annotations", INGRESS_CLASS_ANNOTATION)
    return name is None or name == cls
