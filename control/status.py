"""Status: what FluxGate makes of each object, as Gateway API conditions.

Rules:

* translate() only records status here; it never writes it anywhere. One
  writer turns a report into effects: the controller's leader into API status
  writes, file mode into log lines (``changes_since``) and ``/debug/status``
  (``to_builtins``).
* Conditions are merged by type, as ``meta.SetStatusCondition`` does: setting a
  type again replaces it, so a translator may record a default and refine it.
* A report holds no timestamps (``lastTransitionTime`` is the writer's
  business) and is built in a deterministic order, so translating equal inputs
  gives equal reports and ``changes_since`` between them is empty.
* Types and reasons are the spec's strings, so what is logged in file mode is
  what ``kubectl get -o yaml`` will show once the controller writes it.
* Objects FluxGate does not manage (a Gateway of another class) get no status;
  why they were skipped goes into ``notes``.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import msgspec

from control.objects.resources import key_order

# Condition types.
ACCEPTED = "Accepted"
PROGRAMMED = "Programmed"
RESOLVED_REFS = "ResolvedRefs"
CONFLICTED = "Conflicted"
PARTIALLY_INVALID = "PartiallyInvalid"

# Reasons that just restate a healthy condition; lines() shows no detail for them.
_PLAIN_REASONS = frozenset({ACCEPTED, PROGRAMMED, RESOLVED_REFS, "NoConflicts"})
_KIND_ORDER = {"GatewayClass": 0, "Gateway": 1, "HTTPRoute": 2}
# Types whose healthy status is "False" (the spec's "negative polarity" conditions).
_NEGATIVE = frozenset({CONFLICTED, PARTIALLY_INVALID})


class Condition(msgspec.Struct, frozen=True):
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


class _Conditions:
    """``set``/``get`` for anything with a ``conditions`` list."""

    __slots__ = ()
    conditions: list[Condition]

    def set(self, type: str, ok: bool, reason: str, message: str = "") -> None:
        new = Condition(type, "True" if ok else "False", reason, message)
        for i, old in enumerate(self.conditions):
            if old.type == type:
                self.conditions[i] = new
                return
        self.conditions.append(new)

    def get(self, type: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type), None)

    def is_true(self, type: str) -> bool:
        cond = self.get(type)
        return cond is not None and cond.status == "True"


class RouteGroupKind(msgspec.Struct, frozen=True):
    group: str
    kind: str


class ListenerStatus(_Conditions, msgspec.Struct, rename="camel"):
    name: str
    supported_kinds: list[RouteGroupKind] = []
    attached_routes: int = 0
    conditions: list[Condition] = []


class ParentRef(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """A route's parentRef with the API's defaults filled in."""

    group: str
    kind: str
    namespace: str
    name: str
    section_name: Optional[str] = None
    port: Optional[int] = None

    def __str__(self) -> str:
        text = f"{self.kind} {self.namespace}/{self.name}"
        if self.section_name is not None:
            text += f" listener {self.section_name}"
        if self.port is not None:
            text += f" port {self.port}"
        return text


class ParentStatus(_Conditions, msgspec.Struct, rename="camel"):
    parent_ref: ParentRef
    controller_name: str
    conditions: list[Condition] = []


class Address(msgspec.Struct, frozen=True):
    type: str
    value: str


class ObjectStatus(_Conditions, msgspec.Struct, rename="camel", omit_defaults=True):
    kind: str
    namespace: str
    name: str
    observed_generation: int = 0
    conditions: list[Condition] = []
    addresses: list[Address] = []
    listeners: list[ListenerStatus] = []
    parents: list[ParentStatus] = []

    @property
    def label(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"

    def listener(self, name: str) -> ListenerStatus:
        for lst in self.listeners:
            if lst.name == name:
                return lst
        lst = ListenerStatus(name)
        self.listeners.append(lst)
        return lst

    def parent(self, ref: ParentRef, controller_name: str) -> ParentStatus:
        for parent in self.parents:
            if parent.parent_ref == ref:
                return parent
        parent = ParentStatus(ref, controller_name)
        self.parents.append(parent)
        return parent

    def lines(self) -> list[str]:
        return [line for line, _ in self.judged_lines()]

    def judged_lines(self) -> list[tuple[str, bool]]:
        """``lines()``, each with whether one of its conditions fails (``is_failing``)."""
        out = []
        if self.conditions:
            out.append((f"{self.label}: {_conditions(self.conditions)}", _fails(self.conditions)))
        for lst in self.listeners:
            out.append((f"{self.label} listener {lst.name}: attachedRoutes={lst.attached_routes}"
                        f" {_conditions(lst.conditions)}", _fails(lst.conditions)))
        for parent in self.parents:
            out.append((f"{self.label} parent {parent.parent_ref}: {_conditions(parent.conditions)}",
                        _fails(parent.conditions)))
        return out or [(f"{self.label}: no conditions", False)]


Key = tuple[str, str, str]  # (kind, namespace, name), as resources.ObjectKey


class StatusReport:
    """Status of every object one translation looked at."""

    def __init__(self) -> None:
        self._objects: dict[Key, ObjectStatus] = {}
        self.notes: list[str] = []
        self._noted: set[str] = set()

    def object(self, kind: str, namespace: str, name: str, generation: int = 0) -> ObjectStatus:
        """The status of an object, created empty on first use."""
        key = (kind, namespace, name)
        status = self._objects.get(key)
        if status is None:
            status = self._objects[key] = ObjectStatus(kind, namespace, name, generation)
        return status

    def find(self, kind: str, namespace: str, name: str) -> ObjectStatus | None:
        return self._objects.get((kind, namespace, name))

    def note(self, text: str) -> None:
        if text not in self._noted:
            self._noted.add(text)
            self.notes.append(text)

    def by_key(self) -> dict[Key, ObjectStatus]:
        """Every status by (kind, namespace, name); read only."""
        return self._objects

    def adopt_objects(self, statuses: dict[Key, ObjectStatus]) -> None:
        """Take in statuses of other objects (routes' statuses, which translate's
        route set hands to many reports: so statuses must not be changed once
        a translation is done)."""
        self._objects.update(statuses)

    def __iter__(self) -> Iterator[ObjectStatus]:
        for key in sorted(self._objects, key=_order):
            yield self._objects[key]

    def __len__(self) -> int:
        return len(self._objects)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StatusReport):
            return NotImplemented
        return self.to_builtins() == other.to_builtins()

    def to_builtins(self) -> dict[str, Any]:
        """Plain data for /debug/status and golden files."""
        return {
            "objects": [msgspec.to_builtins(s) for s in self],
            "notes": sorted(self.notes),
        }

    def lines(self) -> list[str]:
        """Every object's status, one readable log line per condition set."""
        out = [line for status in self for line in status.lines()]
        return out + [f"note: {n}" for n in sorted(self.notes)]

    def changes_since(self, previous: StatusReport | None) -> list[str]:
        """The lines of what differs from ``previous`` (all lines if None)."""
        return [line for line, _ in self.judged_changes_since(previous)]

    def judged_changes_since(self, previous: StatusReport | None) -> list[tuple[str, bool]]:
        """``changes_since``, each line with whether it reports a failing condition
        (a rejection: the caller logs it as a warning)."""
        if previous is None:
            return [pair for status in self for pair in status.judged_lines()] + [
                (f"note: {n}", False) for n in sorted(self.notes)]
        out: list[tuple[str, bool]] = []
        # Only keys whose status is not the very same object can differ (translate's
        # memo hands unchanged routes' statuses on as they are): a one-route change
        # costs one identity check per object, not a rendering of every status.
        mine_all, theirs_all = self._objects, previous._objects
        keys = [k for k, v in mine_all.items() if theirs_all.get(k) is not v]
        keys += [k for k in theirs_all if k not in mine_all]
        for key in sorted(keys, key=_order):
            mine, theirs = mine_all.get(key), theirs_all.get(key)
            if mine is None:
                assert theirs is not None
                out.append((f"{theirs.label}: no longer reported", False))
            elif theirs is None or mine.lines() != theirs.lines():
                out.extend(mine.judged_lines())
        out.extend((f"note: {n}", False) for n in sorted(set(self.notes) - set(previous.notes)))
        return out


def is_failing(condition: Condition) -> bool:
    """Whether ``condition`` says something is wrong: its status is not the
    healthy one, which is "True" for every type except the spec's negative
    polarity ones (Conflicted, PartiallyInvalid), where it is "False"."""
    healthy = "False" if condition.type in _NEGATIVE else "True"
    return condition.status != healthy


def _fails(conditions: list[Condition]) -> bool:
    return any(is_failing(c) for c in conditions)


def _order(key: Key) -> str:
    """Kinds in ``_KIND_ORDER`` first, then by key (``key_order``: one string)."""
    return chr(_KIND_ORDER.get(key[0], len(_KIND_ORDER))) + "\0" + key_order(key)


def _conditions(conditions: list[Condition]) -> str:
    parts = []
    for c in conditions:
        text = f"{c.type}={c.status}"
        if c.reason not in _PLAIN_REASONS or (c.message and c.status == "False"):
            detail = f"{c.reason}: {c.message}" if c.message else c.reason
            text += f" ({detail})"
        parts.append(text)
    return " ".join(parts)
