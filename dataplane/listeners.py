"""The worker's listening sockets: one per table Listener, all SO_REUSEPORT.

Every worker binds every listener port itself, so the kernel spreads new
connections across workers with no accept lock and no hand-off. Rules:
* The set of sockets follows the table: a listener that appears is bound, one
  that disappears stops accepting; connections already accepted keep going.
* A port that cannot be bound (in use by another program, no permission) is
  logged once with the reason and retried on every sync; the others serve.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from dataplane.protocol import HttpProtocol

log = logging.getLogger("fluxgate.listeners")

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


class Listeners:
    def __init__(self, worker) -> None:
        self.worker = worker
        self.servers: dict[str, asyncio.AbstractServer] = {}  # listener name -> server
        self._failed: dict[str, str] = {}  # listener name -> last error logged

    async def sync(self, listeners) -> None:
        wanted = {lst.name: lst for lst in listeners}
        for name in list(self.servers):
            if name not in wanted:
                self.servers.pop(name).close()
                log.info("listener removed", extra={"fields": {"listener": name}})
        for name, lst in wanted.items():
            if name in self.servers:
                continue
            address = lst.address or self.worker.settings.bind_address
            try:
                sock = bind_reuseport(address, lst.port)
            except OSError as exc:
                if self._failed.get(name) != str(exc):
                    log.error("cannot bind listener", extra={"fields": {
                        "listener": name, "address": address, "port": lst.port, "error": str(exc)}})
                self._failed[name] = str(exc)
                continue
            self._failed.pop(name, None)
            worker = self.worker
            self.servers[name] = await worker.loop.create_server(
                lambda name=name: HttpProtocol(worker, name), sock=sock, backlog=BACKLOG
            )
            log.debug("listening", extra={"fields": {"listener": name, "address": address, "port": lst.port}})

    def failed(self) -> dict[str, str]:
        return dict(self._failed)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()
