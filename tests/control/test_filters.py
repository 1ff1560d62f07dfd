"""translate/filters.py: each Gateway API filter type read into its typed IR kind.

(The webhook runs the same checks: tests/control/servers/test_webhook.py.)"""

from __future__ import annotations

import typing

import msgspec
import pytest

from control import ir
from control.objects import resources as r
from control.translate import filters
from control.translate.filters import FilterError, convert

PREFIX = (r.HTTPRouteMatch(),)  # the default match: PathPrefix "/"
EXACT = (r.HTTPRouteMatch(path=r.HTTPPathMatch(type="Exact", value="/x")),)


def _filters(*raw: dict) -> tuple[r.HTTPRouteFilter, ...]:
    return msgspec.convert(raw, tuple[r.HTTPRouteFilter, ...])


def test_filters_readers_build_the_ir_kind_named_by_their_type():
    kinds = ir.filter_kinds()
    for name, reader in filters.READERS.items():
        out = typing.get_type_hints(reader.read)["return"]
        assert out is kinds[name], f"the reader of {name} must build ir.{name}"
        assert filters._attribute(reader.field) in r.HTTPRouteFilter.__struct_fields__


def test_filters_backend_filters_are_the_ir_backend_kinds():
    assert filters.BACKEND_FILTERS == ("RequestHeaderModifier", "ResponseHeaderModifier")


@pytest.mark.parametrize("raw, expected", [
    ({"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "X-Env", "value": "prod"}], "remove": ["X-Debug"]}},
     ir.RequestHeaderModifier(set=(ir.HeaderValue(name="X-Env", value="prod"),), remove=("X-Debug",))),
    ({"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "Vary", "value": "a"}]}},
     ir.ResponseHeaderModifier(add=(ir.HeaderValue(name="Vary", value="a"),))),
    ({"type": "RequestRedirect", "requestRedirect": {
        "scheme": "https", "port": 8443, "statusCode": 301,
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}},
     ir.RequestRedirect(scheme="https", port=8443, status_code=301,
                        path=ir.PathModifier(type="ReplacePrefixMatch", value="/new"))),
    ({"type": "URLRewrite", "urlRewrite": {"hostname": "in.example.com"}},
     ir.URLRewrite(hostname="in.example.com")),
    ({"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "shadow", "port": 80}, "fraction": {"numerator": 1, "denominator": 8}}},
     ir.RequestMirror(cluster="", percent=12.5)),
    ({"type": "CORS", "cors": {"allowOrigins": ["https://a.example"], "allowMethods": ["GET"],
                               "allowCredentials": True}},
     ir.CORS(allow_origins=("https://a.example",), allow_methods=("GET",), allow_credentials=True)),
    ({"type": "ExtensionRef", "extensionRef": {"group": "example.io", "kind": "Auth", "name": "a"}},
     ir.ExtensionRef(group="example.io", kind="Auth", name="a")),
], ids=lambda v: v["type"] if isinstance(v, dict) else "")
def test_filters_convert_reads_each_type_as_its_ir_kind(raw, expected):
    assert convert(_filters(raw), PREFIX) == (expected,)


def test_filters_mirror_is_resolved_while_it_is_read():
    asked: list[r.HTTPBackendRef] = []

    def resolve(ref: r.HTTPBackendRef) -> str:
        asked.append(ref)
        return f"{ref.namespace}/{ref.name}:{ref.port}"

    raw = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s", "namespace": "o", "port": 81}}}
    assert convert(_filters(raw), PREFIX, resolve) == (ir.RequestMirror(cluster="o/s:81"),)
    assert asked == [r.HTTPBackendRef(name="s", namespace="o", port=81)]


@pytest.mark.parametrize("raw, matches, message", [
    ([{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
     EXACT, "filters[0].urlRewrite.path: ReplacePrefixMatch needs every match of the rule to be a PathPrefix"),
    ([{"type": "CORS"}], PREFIX, "filters[0]: type CORS needs its cors field"),
    ([{"type": "CORS", "cors": {}}, {"type": "CORS", "cors": {}}], PREFIX,
     "filters[1]: CORS may appear only once in a rule"),
    ([{"type": "RequestRedirect", "requestRedirect": {"statusCode": 200}}], PREFIX,
     "filters[0].requestRedirect.statusCode: must be one of 301, 302, 303, 307, 308"),
])
def test_filters_convert_names_the_first_problem_by_its_field(raw, matches, message):
    with pytest.raises(FilterError) as exc:
        convert(_filters(*raw), matches)
    assert str(exc.value) == message
