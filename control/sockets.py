"""The listening sockets, owned by the control process: one per listener per worker slot.

Why here and not in the workers: a socket's accept queue lives as long as
any process holds it. When a worker dies, the connections the kernel queued
on its socket wait for the replacement, which gets the very same socket
(common/channel.py hands it over), instead of being reset with it; and the
replacement takes its share of new connections at once.

Rules (what must stay true):
* Every listener (table ``Listener``, keyed by its name ``address:port``) has
  exactly ``slots`` sockets, all ``SO_REUSEPORT`` in one group, so the kernel
  spreads new connections over the slots with no accept lock.
* A slot's socket is never closed while the listener is in the table: a worker
  that dies or is recycled leaves it to its successor.
* A listener that leaves the table is closed here when the table that drops
  it is published; each worker keeps accepting on its own copy until it swaps
  to that table, so nothing already queued or accepted is dropped. One that
  cannot be bound (port in use, no permission) is logged once per distinct
  error, kept in ``failed`` and tried again on every ``sync``.
* ``incarnation`` changes when a listener's sockets are made anew (removed and
  added again): a worker holding an older one replaces its server.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

log = logging.getLogger("fluxgate.sockets")

BACKLOG = 2048


def bind_reuseport(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class Group:
    name: str
    address: str
    port: int
    incarnation: int
    socks: list[socket.socket]


class Sockets:
    def __init__(self, slots: int, bind_address: str) -> None:
        self.slots = slots
        self.bind_address = bind_address
        self.groups: dict[str, Group] = {}
        self.failed: dict[str, str] = {}  # listener name -> the error last logged
        self._incarnation = 0

    def sync(self, listeners) -> bool:
        """Bind what the table adds, close what it drops; True if the set changed.
        ``listeners``: (name, address, port) of the table to be published."""
        wanted = {name: (address or self.bind_address, port) for name, address, port in listeners}
        changed = False
        for name in list(self.groups):
            g = self.groups[name]
            if (g.address, g.port) != wanted.get(name):
                self._close(self.groups.pop(name))
                log.info("listener closed", extra={"fields": {"listener": name}})
                changed = True
        for name in list(self.failed):
            if name not in wanted:
                del self.failed[name]
        for name, (address, port) in wanted.items():
            if name in self.groups:
                continue
            socks: list[socket.socket] = []
            try:
                for _ in range(self.slots):
                    socks.append(bind_reuseport(address, port))
            except OSError as exc:
                for s in socks:
                    s.close()
                if self.failed.get(name) != str(exc):
                    log.error("cannot bind listener", extra={"fields": {
                        "listener": name, "address": address, "port": port, "error": str(exc)}})
                self.failed[name] = str(exc)
                continue
            if self.failed.pop(name, None) is not None:
                log.info("listener bound after all", extra={"fields": {"listener": name}})
            self._incarnation += 1
            self.groups[name] = Group(name, address, port, self._incarnation, socks)
            log.debug("listening", extra={"fields": {"listener": name, "address": address, "port": port,
                                                     "sockets": self.slots}})
            changed = True
        return changed

    def for_slot(self, slot: int) -> list[tuple[str, int, int]]:
        """(name, incarnation, fd) of every listener's socket for worker slot ``slot``."""
        return [(g.name, g.incarnation, g.socks[slot].fileno()) for g in self.groups.values()]

    def _close(self, g: Group) -> None:
        for s in g.socks:
            s.close()

    def close(self) -> None:
        """Stop listening (the pod stops): from now on new connections are refused."""
        for g in self.groups.values():
            self._close(g)
        self.groups.clear()
