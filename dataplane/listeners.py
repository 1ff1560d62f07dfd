"""The worker's listening sockets: handed over by the control process, served per table.

The control process binds every listener once per worker slot and sends this
worker its slot's sockets over the channel (control/sockets.py says why).
Rules:
* The sockets offered and the table decide together: a listener is served
  when the table has it and a socket for it was offered; one the table drops,
  or the control process stops offering, stops accepting (connections already
  accepted keep going).
* A newer incarnation of a listener's socket replaces the server on the old.
* An offered socket this worker already serves is a duplicate fd: closed at
  once (the listening socket stays open in the control process).
"""

from __future__ import annotations

import asyncio
import logging
import socket

from dataplane.protocol import HttpProtocol

log = logging.getLogger("fluxgate.listeners")

BACKLOG = 2048


class Listeners:
    def __init__(self, worker) -> None:
        self.worker = worker
        self.servers: dict[str, tuple[int, asyncio.AbstractServer]] = {}  # name -> (incarnation, server)
        self.offered: dict[str, tuple[int, socket.socket]] = {}  # name -> (incarnation, socket) not yet served
        self._building: dict[str, tuple[int, socket.socket]] = {}  # a set arriving in several messages
        self.known: set[str] = set()  # every name in the last whole set offered
        self._lock = asyncio.Lock()  # a table swap and a new set may both sync

    def offer(self, entries: list[tuple[str, int, int]], done: bool) -> None:
        """Sockets from a ``L`` message (common/channel.py); ``done``: the set is whole."""
        for name, incarnation, fd in entries:
            sock = socket.socket(fileno=fd)
            old = self._building.pop(name, None)
            if old is not None:
                old[1].close()
            self._building[name] = (incarnation, sock)
        if not done:
            return
        building, self._building = self._building, {}
        for _, sock in self.offered.values():
            sock.close()
        self.offered = {}
        self.known = set(building)
        for name, (incarnation, sock) in building.items():
            served = self.servers.get(name)
            if served is not None and served[0] == incarnation:
                sock.close()  # a duplicate of what we serve
            else:
                self.offered[name] = (incarnation, sock)

    async def sync(self, listeners) -> None:
        async with self._lock:
            await self._sync(listeners)

    async def _sync(self, listeners) -> None:
        wanted = {lst.name for lst in listeners}
        for name in list(self.servers):
            if name not in wanted or name not in self.known or name in self.offered:
                self.servers.pop(name)[1].close()
                log.info("listener stopped", extra={"fields": {"listener": name}})
        worker = self.worker
        for name in wanted:
            if name in self.servers or name not in self.offered:
                continue
            incarnation, sock = self.offered.pop(name)
            server = await worker.loop.create_server(
                lambda name=name: HttpProtocol(worker, name), sock=sock, backlog=BACKLOG)
            self.servers[name] = (incarnation, server)
            log.debug("listening", extra={"fields": {"listener": name, "incarnation": incarnation}})

    def close(self) -> None:
        for _, server in self.servers.values():
            server.close()
        self.servers.clear()
        for _, sock in self.offered.values():
            sock.close()
        self.offered.clear()
