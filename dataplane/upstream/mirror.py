"""Request mirroring (the RequestMirror filter): a copy of a request, its response ignored.

Rules:
* Fire and forget: nothing a mirror does reaches the client, and nothing it
  fails at changes the client's answer. The mirror upstream's response is
  read and dropped, so its connection can go back to the pool.
* A mirror sees the same head as the real upstream and a copy of every body
  chunk, framed the same way, in order.
* A mirror never slows the client: one whose upstream cannot be reached, has
  no endpoint, or stops reading (its socket buffer fills) is given up.
* To the upstream connection a mirror looks like an exchange whose client
  takes nothing (``relay`` drops it), so the connection sends nothing
  anywhere on its behalf.
"""

from __future__ import annotations

import asyncio
import logging

from dataplane.upstream.connection import UpstreamConnection

log = logging.getLogger("fluxgate.mirror")

BODY_BUFFER_LIMIT = 64 * 1024  # buffered while connecting; beyond it the mirror is given up


class Mirror:
    """A copy of one request to one mirror cluster; to its upstream connection
    it offers an exchange's upstream interface (dataplane/exchange.py), whose
    client is nobody."""

    # What UpstreamConnection reads of an exchange, fixed for a mirror.
    http10 = False
    retry = None  # a mirror is never retried
    responses = ()  # no response filters
    upgrade = False
    expect_continue = False

    def __init__(self, worker, cluster, head: bytes, head_only: bool) -> None:
        self.worker = worker
        self.cluster = cluster
        self.head = head
        self.head_only = head_only
        self.body: list[bytes] = []
        self.buffered = 0
        self.conn = None
        self.req_done = False
        self.done = False
        endpoint = cluster.pick()
        if endpoint is None:
            self.done = True
            return
        conn = worker.pool.acquire(endpoint)
        if conn is not None:
            self._attach(conn)
        else:
            worker.loop.create_task(self._connect(endpoint))

    async def _connect(self, key: tuple[str, int]) -> None:
        worker = self.worker
        try:
            _, conn = await asyncio.wait_for(
                worker.loop.create_connection(
                    lambda: UpstreamConnection(worker.pool, key, worker.outbox), key[0], key[1]),
                worker.settings.upstream_connect_timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("mirror connect failed", extra={"fields": {
                "cluster": self.cluster.name, "upstream": f"{key[0]}:{key[1]}", "error": str(exc)}})
            self.done = True
            return
        worker.pool.opened += 1
        if self.done:
            conn.close()
            return
        self._attach(conn)

    def _attach(self, conn) -> None:
        self.conn = conn
        data = self.head + b"".join(self.body) if self.body else self.head
        self.body = []
        conn.attach(self, data)

    # --- from the client's exchange -------------------------------------------

    def body_chunk(self, framed: bytes) -> None:
        if self.done:
            return
        if self.conn is not None:
            self.conn.write(framed)
            return
        self.body.append(framed)
        self.buffered += len(framed)
        if self.buffered > BODY_BUFFER_LIMIT:
            self._give_up("request body outgrew the buffer while connecting")

    def request_finished(self) -> None:
        self.req_done = True

    # --- from the upstream connection ----------------------------------------------

    def relay(self, data: bytes) -> None:
        pass  # nothing a mirror's upstream sends reaches anyone

    def may_retry(self) -> bool:
        return False

    def response_head(self, block: bytes, status: int) -> bytes:
        return block

    def switching_protocols(self) -> None:
        pass  # never asked for (upgrade is False): the connection refuses a 101

    def connection_header(self) -> bytes:
        return b"\r\n"

    def end_by_close(self) -> None:
        pass

    def response_done(self, conn, reusable: bool) -> None:
        self.conn = None
        self.done = True
        if reusable and self.req_done:
            self.worker.pool.release(conn)
        else:
            conn.close()

    def upstream_failed(self, conn, reason: str) -> None:
        self.conn = None
        self.done = True
        conn.close()
        log.debug("mirror upstream failed", extra={"fields": {"cluster": self.cluster.name, "error": reason}})

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self._give_up("mirror upstream is not reading")

    def _give_up(self, why: str) -> None:
        self.done = True
        self.body = []
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        log.debug("mirror given up", extra={"fields": {"cluster": self.cluster.name, "reason": why}})
