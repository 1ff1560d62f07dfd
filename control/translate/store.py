"""The objects one translation reads, indexed for the lookups translators make.

Rules:

* Built once per translate() call from the cache's objects, then read-only;
  with translate's memo, made from the last one when only routes were
  replaced (``replaced``).
* Every listing is sorted by key, so translators that iterate produce output
  (and status) in a deterministic order.
* Lookups answer questions the API defines rather than expose raw objects:
  the labels of a namespace (including the ``kubernetes.io/metadata.name`` label
  the API server sets on every namespace, so selectors on it work even without
  Namespace objects), whether a ReferenceGrant permits a reference, which
  EndpointSlices belong to a Service.
"""

from __future__ import annotations

import copy
import operator
from collections import defaultdict
from typing import Iterable

from control.objects import resources as r
from control.objects.resources import ObjectKey

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
_KEY = operator.attrgetter("key")
_ROUTE_KINDS = {r.HTTPRoute: "http_routes", r.FluxGateRoute: "fluxgate_routes"}
_FEW = 64  # more changed objects than this: building anew is as cheap


class Store:
    def __init__(self, objects: Iterable[r.Resource]) -> None:
        ordered = sorted(objects, key=_KEY)  # cheap when already sorted (the cache's order)
        self.gateway_classes: dict[str, r.GatewayClass] = {}
        self.gateways: dict[ObjectKey, r.Gateway] = {}
        self.http_routes: dict[ObjectKey, r.HTTPRoute] = {}
        self.fluxgate_routes: dict[ObjectKey, r.FluxGateRoute] = {}
        self.services: dict[tuple[str, str], r.Service] = {}
        self.namespaces: dict[str, r.Namespace] = {}
        self.ingresses: dict[ObjectKey, r.Ingress] = {}
        self.ingress_classes: dict[str, r.IngressClass] = {}
        self._slices: dict[tuple[str, str], list[r.EndpointSlice]] = defaultdict(list)
        self._grants: dict[str, list[r.ReferenceGrant]] = defaultdict(list)
        # Made by ``replaced``: the keys of the routes replaced (every other
        # object is the one of the Store it was made from); None: built anew.
        self.replaced_routes: list[ObjectKey] | None = None
        for obj in ordered:
            if isinstance(obj, r.GatewayClass):
                self.gateway_classes[obj.name] = obj
            elif isinstance(obj, r.Gateway):
                self.gateways[obj.key] = obj
            elif isinstance(obj, r.HTTPRoute):
                self.http_routes[obj.key] = obj
            elif isinstance(obj, r.FluxGateRoute):
                self.fluxgate_routes[obj.key] = obj
            elif isinstance(obj, r.Service):
                self.services[(obj.namespace, obj.name)] = obj
            elif isinstance(obj, r.EndpointSlice):
                if obj.service_name:
                    self._slices[(obj.namespace, obj.service_name)].append(obj)
            elif isinstance(obj, r.ReferenceGrant):
                self._grants[obj.namespace].append(obj)
            elif isinstance(obj, r.Namespace):
                self.namespaces[obj.name] = obj
            elif isinstance(obj, r.Ingress):
                self.ingresses[obj.key] = obj
            elif isinstance(obj, r.IngressClass):
                self.ingress_classes[obj.name] = obj

    def replaced(self, old: tuple[r.Resource, ...], new: tuple[r.Resource, ...]) -> "Store | None":
        """The Store of ``new``, made from this one (built from ``old``) when
        ``new`` differs from ``old`` only by a few routes replaced in place (the
        common change: one route edited among thousands); None otherwise."""
        if len(old) != len(new):
            return None
        changed = [(a, b) for a, b in zip(old, new) if a is not b]
        if len(changed) > _FEW:
            return None
        patched = copy.copy(self)
        for a, b in changed:
            kind = type(b)
            if type(a) is not kind or kind not in _ROUTE_KINDS or a.key != b.key:
                return None
        for kind, attr in _ROUTE_KINDS.items():
            mine = [b for _, b in changed if type(b) is kind]
            if mine:
                routes = dict(getattr(self, attr))  # a copy: this Store stays as it was
                for b in mine:
                    routes[b.key] = b
                setattr(patched, attr, routes)
        patched.replaced_routes = [b.key for _, b in changed]
        return patched

    def endpoint_slices(self, namespace: str, service: str) -> list[r.EndpointSlice]:
        """The slices labelled ``kubernetes.io/service-name: service``, by name."""
        return self._slices.get((namespace, service), [])

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        obj = self.namespaces.get(namespace)
        labels = dict(obj.metadata.labels) if obj else {}
        labels[NAMESPACE_NAME_LABEL] = namespace
        return labels

    def reference_permitted(
        self,
        *,
        from_group: str,
        from_kind: str,
        from_namespace: str,
        to_group: str,
        to_kind: str,
        to_namespace: str,
        to_name: str,
    ) -> bool:
        """Whether a reference across namespaces is allowed by a ReferenceGrant
        in the target's namespace (same-namespace references always are)."""
        if from_namespace == to_namespace:
            return True
        for grant in self._grants.get(to_namespace, ()):
            if not any(
                f.group == from_group and f.kind == from_kind and f.namespace == from_namespace
                for f in grant.spec.from_
            ):
                continue
            if any(
                t.group == to_group and t.kind == to_kind and t.name in (None, "", to_name)
                for t in grant.spec.to
            ):
                return True
        return False


def selector_matches(selector: r.LabelSelector, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics (an empty selector matches everything)."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In" and not (present and labels[req.key] in req.values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True
