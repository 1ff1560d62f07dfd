"""CorsPolicy and HeaderTemplates: the per-request parts of two filters, as pure functions."""

from __future__ import annotations

import pytest

from control.compile import template_parts
from dataplane.filters.cors import CorsPolicy
from dataplane.filters.template import HeaderTemplates
from shm.schema import CORS, HeaderTemplate, RequestHeaderTemplate


@pytest.mark.parametrize("origin, allowed", [
    (b"https://www.foo.com", True),
    (b"HTTPS://WWW.FOO.COM", True),  # scheme and host are case-insensitive
    (b"https://a.bar.com", True),
    (b"https://a.b.c.bar.com", True),  # "*." covers any number of labels
    (b"https://bar.com", False),  # but not the bare domain
    (b"https://evilbar.com", False),
    (b"https://a.bar.com.evil.com", False),
    (b"http://a.bar.com", False),  # another scheme
    (b"https://a.bar.com:8443", False),  # another port
    (b"https://www.foo.com:8443", False),
    (b"null", False),
])
def test_cors_origin_matching(origin, allowed):
    policy = CorsPolicy(CORS(allow_origins=("https://www.foo.com", "https://*.bar.com")))
    assert policy.allows(origin) is allowed


def test_cors_rejected_origin_strips_the_upstreams_cors_headers():
    policy = CorsPolicy(CORS(allow_origins=("https://a.com",)))
    edit = policy.response_edit(b"https://b.com")
    assert edit.lines == b"" and b"access-control-allow-origin" in edit.drop


def test_cors_preflight_lists_configured_methods_and_headers():
    policy = CorsPolicy(CORS(allow_origins=("*",), allow_methods=("GET", "POST"), allow_headers=("x-a",),
                             max_age=60))
    lines = policy.preflight(b"https://any.example", b"DELETE", b"x-b")
    assert lines == (b"access-control-allow-origin: https://any.example\r\n"
                     b"access-control-allow-methods: GET, POST\r\n"
                     b"access-control-allow-headers: x-a\r\n"
                     b"access-control-max-age: 60\r\nvary: origin\r\n")


def _templates(**values: str) -> HeaderTemplates:
    return HeaderTemplates(RequestHeaderTemplate(set=tuple(
        HeaderTemplate(name, template_parts(value)) for name, value in values.items())))


def test_template_renders_each_placeholder():
    t = _templates(**{"X-A": "%{client_ip}|%{path_segment:1}|%{path_segment:3}|%{header:x-b}"})
    lines = t.render(b"10.0.0.1", b"/one/two", [(b"X-B", b"v1"), (b"x-b", b"v2")])
    assert lines == b"X-A: 10.0.0.1|one||v1, v2\r\n"  # a missing segment fills in as nothing


def test_template_request_id_is_the_requests():
    t = _templates(**{"X-Id": "%{request_id}"})
    assert t.render(b"", b"/", [(b"X-Request-ID", b"abc")], b"abc") == b"X-Id: abc\r\n"


def test_template_that_renders_empty_sends_no_header():
    assert _templates(**{"X-A": "%{header:x-absent}"}).render(b"", b"/", []) == b""
