"""The validating admission webhook (``fluxgate-crd-validator``), over HTTPS.

Every ``fluxgate controller`` replica serves it, leader or not. The API server
sends it an ``admission.k8s.io/v1`` AdmissionReview for each create or update
of the kinds it is registered for; an object that FluxGate's translation would
reject is refused, with the message ``fluxgate validate`` and the status
conditions give, so the user meets the problem at ``kubectl apply``.

Rules:

* ``POST /validate`` with an AdmissionReview → 200 and an AdmissionReview
  whose ``response.uid`` echoes the request's; ``allowed`` true, or false with
  ``status`` {code 422, reason Invalid, message}.
* Checked: CREATE and UPDATE of the object itself (no subresource) for the
  kinds in ``CHECKED``: GatewayClass, Gateway, HTTPRoute, ReferenceGrant,
  FluxGateRoute, Ingress, IngressClass, at the apiVersions FluxGate reads.
  The check is ``validation.parse``, the same code ``fluxgate validate`` and
  the object cache run; the denial message is exactly its ``Invalid``
  message (the field path first). For routes, each rule's filters are also
  run through ``filters.convert``, as translation does: a filter it refuses
  (an unknown type, a missing member, a bad header name...) would drop the rule
  (``PartiallyInvalid``, "rule N: filters[M]: ..."); here it is refused as
  ``spec.rules[N].filters[M]: ...``. Those are the Gateway API's own schema
  and CEL rules; what is valid Gateway API but not supported by FluxGate yet
  (e.g. a redirect on a backendRef) is allowed and reported in status instead,
  as the spec wants.
* Allowed without a look: DELETE and CONNECT, subresources (``status``: the
  status writer must never be blocked by an object's spec), other kinds,
  apiVersions FluxGate does not read, and an UPDATE that leaves what is
  checked (spec and annotations) as it was, or of an object being deleted:
  an object stored before the webhook existed can still get labels, and its
  finalizers removed (ratcheting, as the API server does for CRD schemas).
* HTTP: malformed JSON or a body that is not an AdmissionReview with a
  request and a uid → 400; another method → 405; another path → 404;
  a missing Content-Length → 411; a body over ``MAX_BODY`` → 413; a bug in a
  check → 500, so the API server's ``failurePolicy`` decides. Connections are
  kept alive (the API server reuses them) until idle for ``IDLE_TIMEOUT``.
* TLS only (1.2 or newer, ALPN ``http/1.1``), from a PEM certificate and key
  file pair. The files are re-read when they change (cert-manager rotates
  them in place): connections accepted afterwards get the new certificate.

Theory of operation: an ``asyncio`` server, like the admin server (admin.py),
run on the controller's loop; each connection reads a head, a body of
Content-Length bytes, answers, and loops. Checks are short, CPU-bound and
synchronous (``review``), so they run inline.

Deployment needs (later, in deploy/): a Service selecting the controller pods
on FLUXGATE_WEBHOOK_PORT; a certificate for ``<service>.<namespace>.svc`` in a
Secret mounted at FLUXGATE_WEBHOOK_CERT / FLUXGATE_WEBHOOK_KEY (cert-manager,
with its CA injected into the configuration's ``caBundle``); a
ValidatingWebhookConfiguration ``fluxgate-crd-validator`` with
``admissionReviewVersions: [v1]``, ``sideEffects: None``, path ``/validate``,
operations CREATE and UPDATE on the kinds above (resources, not ``*/status``),
``timeoutSeconds`` ~5 and a ``failurePolicy`` chosen by the operator (Fail is
safest; Ignore keeps the cluster writable while every replica is down).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from typing import Any, Iterable

from control.objects.raw import KObject
from control.objects import kinds, validation
from control.translate import filters
from control.objects import resources as r

log = logging.getLogger("fluxgate.webhook")

PATH = "/validate"
CHECKED = kinds.WEBHOOK_KINDS
MAX_HEAD = 16 * 1024
MAX_BODY = 8 * 1024 * 1024  # an object may be 1.5 MiB in etcd; a review holds two
READ_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
RELOAD_INTERVAL = 1.0  # at most one stat of the certificate files per interval


class BadReview(ValueError):
    """The body is not an AdmissionReview this webhook can answer (400)."""


# --- the checks: pure ------------------------------------------------------------------------


def check(obj: dict) -> str | None:
    """Why ``obj`` would be rejected by translation (None: it would not).

    Raises nothing for input an API server can send; kinds and versions
    FluxGate does not read are never rejected.
    """
    try:
        resource = validation.parse(KObject(obj, "admission", 0))
    except validation.Unsupported:
        return None
    except validation.Invalid as exc:
        return str(exc)
    if isinstance(resource, (r.HTTPRoute, r.FluxGateRoute)):
        problems = list(_filter_problems(resource))
        if problems:
            return "; ".join(problems)
    return None


def _filter_problems(route: r.HTTPRoute | r.FluxGateRoute) -> Iterable[str]:
    """What ``filters.convert`` refuses, per rule, as translation runs it."""
    for i, rule in enumerate(route.spec.rules):
        at = f"spec.rules[{i}]"
        try:
            filters.convert(rule.filters, rule.matches)
        except filters.FilterError as exc:
            yield _under(at, str(exc))
        for j, ref in enumerate(rule.backend_refs):
            try:
                filters.convert(ref.filters, rule.matches)
            except filters.FilterError as exc:
                yield _under(f"{at}.backendRefs[{j}]", str(exc))


def _under(at: str, message: str) -> str:
    """``filters[0]: ...`` under ``spec.rules[1]``: ``spec.rules[1].filters[0]: ...``."""
    return f"{at}.{message}" if message.startswith("filters[") else f"{at}: {message}"


def review(body: bytes) -> dict:
    """The AdmissionReview answering ``body``; raises ``BadReview`` for a bad body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadReview(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != "AdmissionReview":
        raise BadReview("body is not an AdmissionReview")
    request = data.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise BadReview("AdmissionReview has no request with a uid")
    message = _judge(request)
    response: dict[str, Any] = {"uid": request["uid"], "allowed": message is None}
    if message is not None:
        response["status"] = {"code": 422, "reason": "Invalid", "message": message}
    return {"apiVersion": data.get("apiVersion") or "admission.k8s.io/v1",
            "kind": "AdmissionReview", "response": response}


def _judge(request: dict) -> str | None:
    if request.get("operation") not in ("CREATE", "UPDATE") or request.get("subResource"):
        return None
    kind = request.get("kind") or {}
    obj = request.get("object")
    if not isinstance(obj, dict) or not isinstance(kind, dict) or kind.get("kind") not in CHECKED:
        return None
    old = request.get("oldObject")
    if request["operation"] == "UPDATE" and isinstance(old, dict) and (
            _checked_part(obj) == _checked_part(old) or _meta(obj).get("deletionTimestamp")):
        return None
    group, version = kind.get("group", ""), kind.get("version", "")
    # The object is in the version the review names (matchPolicy: Equivalent converts it).
    obj = dict(obj, apiVersion=f"{group}/{version}" if group else version, kind=kind["kind"])
    meta = dict(_meta(obj))
    if not meta.get("name"):  # generateName: the API server names it after admission
        meta["name"] = request.get("name") or meta.get("generateName") or ""
    if not meta.get("namespace") and request.get("namespace"):
        meta["namespace"] = request["namespace"]
    obj["metadata"] = meta
    return check(obj)


def _meta(obj: dict) -> dict:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _checked_part(obj: dict) -> tuple:
    """What validation reads of an object besides its identity."""
    return obj.get("spec"), _meta(obj).get("annotations")


# --- the server ---------------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Content Too Large", 500: "Internal Server Error",
            501: "Not Implemented"}


class Webhook:
    """``await start()`` on a running loop; ``close()``; ``port`` is the bound port."""

    def __init__(self, address: str, port: int, cert_file: str, key_file: str) -> None:
        """Settings: FLUXGATE_WEBHOOK_PORT, FLUXGATE_WEBHOOK_CERT, FLUXGATE_WEBHOOK_KEY."""
        self.address = address
        self.port = port
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(["http/1.1"])
        self._loaded = self._stamp()
        self.context.load_cert_chain(cert_file, key_file)  # a bad pair fails at start
        self._checked = time.monotonic()
        self.server: asyncio.AbstractServer | None = None
        self.reviews = 0
        self.denied = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, self.address, self.port, ssl=self.context, reuse_address=True,
            limit=MAX_HEAD)
        self.port = self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()

    # -- certificates ---------------------------------------------------------------------

    def _stamp(self) -> tuple:
        out = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_INTERVAL:
            return
        self._checked = now
        stamp = self._stamp()
        if stamp == self._loaded:
            return
        try:
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:  # half-written by the rotator: next time
            log.warning("webhook certificate not reloaded", extra={"fields": {"error": str(exc)}})
            return
        self._loaded = stamp
        log.info("webhook certificate reloaded", extra={"fields": {"cert": self.cert_file}})

    # -- HTTP ----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._maybe_reload()
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        asyncio.TimeoutError):
                    return
                status, body, keep = await self._request(head, reader)
                writer.write(
                    b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
                    % (status, _REASONS.get(status, "OK").encode(), len(body),
                       b"" if keep else b"connection: close\r\n") + body)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, ssl.SSLError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _request(self, head: bytes, reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        """(status, body, keep the connection) for one request."""
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
        except ValueError:
            return 400, _error("malformed request head"), False
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "transfer-encoding" in headers:
            return 501, _error("chunked bodies are not supported; send Content-Length"), False
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return 413, _error(f"body larger than {MAX_BODY} bytes"), False
        body = b""
        if length:
            body = await asyncio.wait_for(reader.readexactly(int(length)), READ_TIMEOUT)
        if target.split("?", 1)[0] != PATH:
            return 404, _error(f"not found; POST AdmissionReviews to {PATH}"), keep
        if method != "POST":
            return 405, _error("only POST"), keep
        if length is None:
            return 411, _error("Content-Length required"), False
        try:
            answer = review(body)
        except BadReview as exc:
            return 400, _error(str(exc)), keep
        except Exception:  # a bug: let the API server's failurePolicy decide
            log.exception("webhook review failed")
            return 500, _error("internal error"), keep
        self.reviews += 1
        response = answer["response"]
        if not response["allowed"]:
            self.denied += 1
            log.info("admission denied", extra={"fields": {
                "uid": response["uid"], "message": response["status"]["message"]}})
        return 200, json.dumps(answer).encode(), keep


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
