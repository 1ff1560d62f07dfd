"""GatewayClasses and Gateways: which are ours, and what each listener can do.

Rules:

* A GatewayClass is ours when its ``controllerName`` is FluxGate's. In file
  mode the class named ``default_class`` is also ours when no GatewayClass
  object of that name exists (a GatewayClass object, when present, always
  decides). Objects of other controllers get no status, only a note.
* A Gateway is served when its class is ours and accepted and its addresses
  are usable: ``IPAddress`` addresses become the bind addresses of every
  listener; no address means the global bind address (""). Any other address
  type, or a value that is not an IP, rejects the Gateway (UnsupportedAddress).
* A listener carries routes when it is Accepted and not Conflicted. It goes
  into the table (Programmed) when, in addition, its refs resolve and its
  protocol is HTTP. HTTPS listeners are accepted and carry routes, but stay
  ``Programmed=False/Pending`` until TLS termination exists: the status tells
  the truth and the table never binds a socket it cannot serve.
* Listeners on one port with different protocols conflict (ProtocolConflict)
  and are all left out, as the spec asks (never a partial, order-dependent
  choice). Across Gateways listeners on the same address and port are merged
  by compile, since they share one socket.
* ``allowedRoutes.namespaces.from: Selector`` is implemented with namespace
  labels: labels of Namespace objects when present, plus the
  ``kubernetes.io/metadata.name`` label every namespace has.
"""

from __future__ import annotations

import ipaddress
import operator
from dataclasses import dataclass, field

from control import ir
from control.status import (
    ACCEPTED,
    CONFLICTED,
    PROGRAMMED,
    RESOLVED_REFS,
    Address,
    ListenerStatus,
    ObjectStatus,
    RouteGroupKind,
    StatusReport,
)
from control.objects import resources as r
from control.objects.resources import FLUXGATE_GROUP, GATEWAY_GROUP, ObjectKey
from control.translate.store import Store, selector_matches

SUPPORTED_PROTOCOLS = ("HTTP", "HTTPS")
# (group, kind) of the routes each listener protocol carries.
_HTTP_ROUTES = ((GATEWAY_GROUP, "HTTPRoute"), (FLUXGATE_GROUP, "FluxGateRoute"))
ROUTE_KINDS = {"HTTP": _HTTP_ROUTES, "HTTPS": _HTTP_ROUTES}


@dataclass
class ListenerState:
    """A listener during translation; routes attach to it."""

    gateway: r.Gateway
    spec: r.Listener
    status: ListenerStatus
    addresses: tuple[str, ...]
    kinds: tuple[tuple[str, str], ...] = ()  # (group, kind) of the routes it admits
    usable: bool = False  # accepted and not conflicted: routes may attach
    programmed: bool = False  # in the table
    attachments: dict[str, ir.Attachment] = field(default_factory=dict)  # by route ref
    # ``attachments`` sorted by route ref, when whoever set them had it at hand
    # (routeset.py keeps it between translations); None: sort here.
    sorted_attachments: tuple[ir.Attachment, ...] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def hostname(self) -> str:
        return self.spec.hostname or ""

    def admits(self, route: r.HTTPRoute, store: Store) -> bool:
        """allowedRoutes: the route's kind and namespace."""
        if (route.GROUP, route.KIND) not in self.kinds:
            return False
        policy = self.spec.allowed_routes.namespaces
        if policy.from_ == "All":
            return True
        if policy.from_ == "Same":
            return route.namespace == self.gateway.namespace
        assert policy.selector is not None  # validation requires it
        return selector_matches(policy.selector, store.namespace_labels(route.namespace))


    def to_ir(self) -> ir.Listener:
        return ir.Listener(
            gateway=f"{self.gateway.namespace}/{self.gateway.name}",
            name=self.name,
            addresses=self.addresses,
            port=self.port,
            protocol=self.spec.protocol,
            hostname=self.hostname,
            programmed=self.programmed,
            attachments=self.sorted_attachments if self.sorted_attachments is not None
            else tuple(att for _, att in sorted(self.attachments.items(), key=_FIRST)),
        )


_FIRST = operator.itemgetter(0)  # (route ref, attachment): by ref


@dataclass
class GatewayState:
    gateway: r.Gateway
    status: ObjectStatus
    accepted: bool
    listeners: list[ListenerState] = field(default_factory=list)


def accept_classes(
    store: Store, report: StatusReport, *, controller_name: str, default_class: str | None
) -> dict[str, bool]:
    """Our GatewayClass names, each mapped to whether it is accepted."""
    classes: dict[str, bool] = {}
    for name, gc in store.gateway_classes.items():
        if gc.spec.controller_name != controller_name:
            continue
        status = report.object(gc.KIND, "", name, gc.metadata.generation)
        if gc.spec.parameters_ref is not None:
            status.set(ACCEPTED, False, "InvalidParameters",
                       "parametersRef is not supported by FluxGate")
            classes[name] = False
        else:
            status.set(ACCEPTED, True, "Accepted", f"handled by {controller_name}")
            classes[name] = True
    if default_class and default_class not in store.gateway_classes:
        classes[default_class] = True
    return classes


def accept_gateways(
    store: Store, report: StatusReport, classes: dict[str, bool]
) -> dict[ObjectKey, GatewayState]:
    """Every Gateway of ours, with its listeners judged."""
    out: dict[ObjectKey, GatewayState] = {}
    for key, gw in store.gateways.items():
        class_name = gw.spec.gateway_class_name
        if class_name not in classes:
            report.note(f"{key} ignored: GatewayClass {class_name!r} is not handled by FluxGate")
            continue
        status = report.object(gw.KIND, gw.namespace, gw.name, gw.metadata.generation)
        if not classes[class_name]:
            status.set(ACCEPTED, False, "Pending", f"GatewayClass {class_name!r} is not accepted")
            status.set(PROGRAMMED, False, "Pending", f"GatewayClass {class_name!r} is not accepted")
            out[key] = GatewayState(gw, status, accepted=False)
            continue
        addresses, problem = _addresses(gw)
        state = GatewayState(gw, status, accepted=not problem)
        state.listeners = [_listener(gw, spec, status, addresses, state.accepted)
                           for spec in gw.spec.listeners]
        _gateway_conditions(state, problem)
        if not problem and gw.spec.addresses:
            status.addresses = [Address("IPAddress", a) for a in addresses]
        out[key] = state
    return out


def _addresses(gw: r.Gateway) -> tuple[tuple[str, ...], str]:
    """The bind addresses of a Gateway, or a reason it has none usable."""
    if not gw.spec.addresses:
        return ("",), ""
    found: list[str] = []
    for i, addr in enumerate(gw.spec.addresses):
        if addr.type != "IPAddress":
            return (), f"spec.addresses[{i}]: address type {addr.type!r} is not supported"
        try:
            value = str(ipaddress.ip_address(addr.value))
        except ValueError:
            return (), f"spec.addresses[{i}]: {addr.value!r} is not an IP address"
        if value not in found:
            found.append(value)
    return tuple(found), ""


def _listener(
    gw: r.Gateway, spec: r.Listener, gw_status: ObjectStatus,
    addresses: tuple[str, ...], gateway_ok: bool,
) -> ListenerState:
    status = gw_status.listener(spec.name)
    state = ListenerState(gw, spec, status, addresses)
    supported = spec.protocol in SUPPORTED_PROTOCOLS

    # Route kinds: what the protocol can carry, narrowed by allowedRoutes.kinds.
    possible = ROUTE_KINDS.get(spec.protocol, ())
    wanted = spec.allowed_routes.kinds
    invalid = [k for k in wanted if (k.group, k.kind) not in possible]
    if wanted:
        state.kinds = tuple(dict.fromkeys((k.group, k.kind) for k in wanted if k not in invalid))
    else:
        state.kinds = possible
    status.supported_kinds = [RouteGroupKind(group, kind) for group, kind in state.kinds]

    clash = _protocol_clash(gw, spec)
    resolved = not invalid
    state.usable = gateway_ok and supported and not clash
    state.programmed = state.usable and resolved and spec.protocol == "HTTP"

    # Conditions in the order the spec lists them.
    if not supported:
        status.set(ACCEPTED, False, "UnsupportedProtocol",
                   f"protocol {spec.protocol} is not supported (use HTTP or HTTPS)")
    elif clash:
        status.set(ACCEPTED, False, "PortUnavailable", clash)
    else:
        status.set(ACCEPTED, True, "Accepted")

    if state.programmed:
        status.set(PROGRAMMED, True, "Programmed")
    elif state.usable and resolved:  # HTTPS
        status.set(PROGRAMMED, False, "Pending", "TLS termination is not implemented yet")
    elif not gateway_ok:
        status.set(PROGRAMMED, False, "Invalid", "the Gateway is not accepted")
    else:
        status.set(PROGRAMMED, False, "Invalid", "the listener is not valid")

    if resolved:
        status.set(RESOLVED_REFS, True, "ResolvedRefs")
    else:
        names = ", ".join(f"{k.group or 'core'}/{k.kind}" for k in invalid)
        status.set(RESOLVED_REFS, False, "InvalidRouteKinds",
                   f"route kinds not supported on {spec.protocol}: {names}")

    if clash:
        status.set(CONFLICTED, True, "ProtocolConflict", clash)
    else:
        status.set(CONFLICTED, False, "NoConflicts")
    return state


def _protocol_clash(gw: r.Gateway, spec: r.Listener) -> str:
    """Why ``spec`` conflicts with another listener of its Gateway ("" if not)."""
    for other in gw.spec.listeners:
        if other is spec or other.port != spec.port or other.protocol == spec.protocol:
            continue
        if "UDP" in (other.protocol, spec.protocol):  # TCP and UDP may share a port number
            continue
        return (f"port {spec.port} is also used by listener {other.name!r}"
                f" with protocol {other.protocol}")
    return ""


def _gateway_conditions(state: GatewayState, address_problem: str) -> None:
    status = state.status
    if address_problem:
        status.set(ACCEPTED, False, "UnsupportedAddress", address_problem)
        status.set(PROGRAMMED, False, "AddressNotUsable", address_problem)
        return
    bad = [lst.name for lst in state.listeners
           if not (lst.usable and lst.status.is_true(RESOLVED_REFS))]
    if bad:
        status.set(ACCEPTED, True, "ListenersNotValid",
                   "listeners not valid: " + ", ".join(bad))
    else:
        status.set(ACCEPTED, True, "Accepted")
    if any(lst.programmed for lst in state.listeners):
        status.set(PROGRAMMED, True, "Programmed")
    elif any(lst.status.get(PROGRAMMED).reason == "Pending" for lst in state.listeners):
        status.set(PROGRAMMED, False, "Pending", "no listener can be served yet")
    else:
        status.set(PROGRAMMED, False, "Invalid", "no listener is valid")
