"""Dispatch: what a complete Request becomes - its route, its filters, its backend, an exchange.

Shared by every protocol that makes Requests (HTTP/1.1 today): the order of
decisions is the gateway's behaviour, so it is written once.

1. The virtual host for the request's Host (the router's host index). A
   keep-alive client repeats its Host: the last one's virtual host is kept
   for the table generation it came from (the generation, not the Router:
   holding the Router would keep the old ring slot referenced after the
   worker unpinned it).
2. The route entry (precedence order; no match is 404; a damaged virtual
   host, router.py, is 503).
3. The rule's filter chain (dataplane/filters/chain.py): it may answer (a
   redirect, a CORS preflight).
4. The backend by weight (none resolved is 500), its own chain, an endpoint
   (none ready is 503).
5. The upstream head, framed once, and the exchange that sends it.
"""

from __future__ import annotations

from dataplane import responses
from dataplane.exchange import Exchange, answered, proxied


class Dispatcher:
    """One client connection's dispatching, with its cache of the last Host."""

    __slots__ = ("worker", "reader", "plain", "_generation", "_host", "_vhost")

    def __init__(self, worker, reader) -> None:
        self.worker = worker
        self.reader = reader  # the connection's HeadReader
        # The last exchange was proxied by a route with no filters: the
        # Request was only read, so the same Request may serve a repeat.
        self.plain = False
        self._generation, self._host, self._vhost = -1, None, None

    def forget(self) -> None:
        self._generation, self._host, self._vhost = -1, None, None

    def exchange(self, proto, req) -> Exchange:
        """The exchange for ``req`` on ``proto``'s listener. Raises request.Refused
        for a Host that is not valid."""
        self.plain = False
        router = self.worker.router
        if req.host == self._host and router is not None and router.generation == self._generation:
            vh = self._vhost
        else:
            key = self.reader.host_key(req)
            vh = router.vhost(proto.listener, key) if router is not None else None
            self._generation, self._host, self._vhost = router.generation if router else -1, req.host, vh
        if vh is None:
            ex = local(proto, req, 404, req.keep_local)
            ex.gateway = router.gateway(proto.listener) if router is not None else ""
            return ex
        cand = vh.match(req.method, req.path, req.headers, req.query)
        if cand is not None:
            ex = self._exchange(proto, req, cand)
        else:  # no route; or a virtual host whose bytes were damaged (router.py): 503
            ex = local(proto, req, 503 if vh.damaged else 404, req.keep_local)
        ex.gateway = vh.gateway  # labels for the meter and the access log
        if cand is not None:
            ex.source = cand.source
        return ex

    def _exchange(self, proto, req, cand) -> Exchange:
        action = cand.action
        chain = action.chain
        if chain is not None:
            req.prefix = cand.prefix
            answer = chain.request(req)
            if answer is not None:
                return answered(proto, answer, req.keep_local, req.http10, req.head_only, req)
        if action.backend_chains is None:
            cluster = action.single or action.choose()
            filters = action.responses
        else:
            i = action.choose_index()
            cluster = action.clusters[i] if i >= 0 else None
            if cluster is not None:
                backend = action.backend_chains[i]
                if backend is not None:
                    backend.request(req)  # header modifiers: they never answer
                filters = action.responses[i]
        if cluster is None:
            return local(proto, req, 500, req.keep_local)
        endpoints = cluster.endpoints
        endpoint = endpoints[0] if len(endpoints) == 1 else cluster.pick()
        if endpoint is None:
            return local(proto, req, 503, req.keep_local)
        head = self.reader.upstream_head(req, cluster.host_rewrite)
        self.plain = chain is None and action.backend_chains is None
        return proxied(proto, req, head, cluster, endpoint, action, filters)


def local(proto, req, status: int, keep_alive: bool) -> Exchange:
    """The gateway's own answer ``status`` (a prebuilt response) to ``req``."""
    data = responses.error(status, not keep_alive, req.head_only, req.request_id)
    return answered(proto, data, keep_alive, req.http10, req.head_only, req)
