"""The filter chain: one documented order, whatever order a route writes its filters in."""

from __future__ import annotations

import re
import typing

from dataplane.filters import chain
from dataplane.filters.chain import ORDER, build
from dataplane.request import Request
from shm import schema
from shm.schema import HeaderValue


class _Reader:
    client, scheme, port = b"192.0.2.1", b"http", 8080


def _request(method=b"GET", path=b"/a/b", query=b"q=1", headers=(), host=b"example.com") -> Request:
    target = path + (b"?" + query if query else b"")
    req = Request(method, target, path, query, host, list(headers),
                  [b"%s: %s\r\n" % (n, v) for n, v in headers], _Reader())
    req.keep_local = True
    req.keep_alive = True
    return req


def _documented() -> tuple[list[str], list[str]]:
    """The request and response columns of the order table in chain.py's docstring."""
    request, response = [], []
    for line in chain.__doc__.splitlines():
        cells = re.findall(r"\d\. (\w+)", line)
        if cells:
            request.append(cells[0])
            response += cells[1:]
    return request, response


def test_chain_order_is_the_documented_order():
    tag = lambda kind: kind.SPEC.__struct_config__.tag  # noqa: E731
    request, response = _documented()
    assert [tag(k) for k in ORDER if k.REQUEST] == request == [
        "RequestHeaderModifier", "RequestHeaderTemplate", "CORS", "RequestRedirect", "URLRewrite",
        "RequestMirror"]
    assert [tag(k) for k in ORDER if k.RESPONSE] == response == ["CORS", "ResponseHeaderModifier"]


def test_chain_has_a_filter_class_for_every_schema_filter_kind():
    assert {k.SPEC for k in ORDER} == set(typing.get_args(schema.Filter))


def test_chain_runs_in_order_whatever_order_the_route_wrote():
    specs = [
        schema.URLRewrite(hostname="rewritten", path_type="ReplaceFullPath", path="/new"),
        schema.RequestHeaderModifier(set=(HeaderValue("Host", "modified"), HeaderValue("X-A", "1"))),
    ]
    for written in (specs, specs[::-1]):
        req = _request()
        assert build(written, lambda name: None).request(req) is None
        # The rewrite comes after the header modifier: its hostname wins.
        assert req.host_out == b"rewritten"
        assert req.target == b"/new?q=1"
        assert b"X-A: 1\r\n" in req.forward


def test_chain_an_answering_filter_ends_the_request_phase():
    redirect = schema.RequestRedirect(hostname="elsewhere.example", status=301)
    rewrite = schema.URLRewrite(path_type="ReplaceFullPath", path="/never")
    req = _request()
    answer = build([rewrite, redirect], lambda name: None).request(req)
    assert answer.startswith(b"HTTP/1.1 301 ")
    assert b"location: http://elsewhere.example:8080/a/b?q=1\r\n" in answer
    assert req.target == b"/a/b?q=1"  # the rewrite after the redirect never ran


def test_chain_cors_preflight_is_answered_before_a_redirect():
    cors = schema.CORS(allow_origins=("https://app.example",), allow_methods=("GET",))
    redirect = schema.RequestRedirect(status=302, hostname="elsewhere.example")
    req = _request(b"OPTIONS", headers=[(b"Origin", b"https://app.example"),
                                        (b"Access-Control-Request-Method", b"GET")])
    answer = build([redirect, cors], lambda name: None).request(req)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"access-control-allow-origin: https://app.example\r\n" in answer


def test_chain_response_phase_runs_cors_then_the_response_header_modifier():
    cors = schema.CORS(allow_origins=("*",))
    modifier = schema.ResponseHeaderModifier(set=(HeaderValue("Access-Control-Allow-Origin", "fixed"),))
    for written in ([cors, modifier], [modifier, cors]):
        built = build(written, lambda name: None)
        req = _request(headers=[(b"Origin", b"https://app.example")])
        block = chain.respond(built.responses, req, b"\r\nServer: up\r\n")
        lines = block.split(b"\r\n")
        assert b"Access-Control-Allow-Origin: fixed" in lines
        assert not any(line.lower().startswith(b"access-control-allow-origin: https") for line in lines)


def test_chain_of_no_filters_is_none_and_needs_no_body():
    assert build([], lambda name: None) is None
    built = build([schema.URLRewrite(hostname="x")], lambda name: None)
    assert built.needs_body is False


def test_header_modifier_setting_x_request_id_makes_it_the_request_id_not_a_second_line():
    req = _request(headers=((b"x-a", b"1"),))
    req.request_id, req.rid_new = b"generated", True
    mod = schema.RequestHeaderModifier(set=(HeaderValue("X-Request-Id", "from-route"),),
                                       add=(HeaderValue("x-request-id", "second"),))
    assert build([mod], lambda name: None).request(req) is None
    assert req.request_id == b"from-route" and not req.rid_new
    assert not any(b"request-id" in line.lower() for line in req.forward)
    # An invalid value (not printable) leaves the id alone.
    req2 = _request()
    req2.request_id = b"kept"
    build([schema.RequestHeaderModifier(set=(HeaderValue("x-request-id", "bad\tvalue"),))],
          lambda name: None).request(req2)
    assert req2.request_id == b"kept"
