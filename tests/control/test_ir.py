"""The typed IR: its filter kinds agree with the schema's and compile's, it has
no untyped data, and it survives its own dump."""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec
import msgspec.inspect as mi
import pytest
import yaml

from control import compile as comp
from control import ir
from control.cache import ObjectCache
from control.compile import compile_table
from control.sources.files import FileSource
from control.translate import translate
from shm import schema

TESTDATA = Path(__file__).parent / "testdata"
IR_ONLY = {"ExtensionRef"}  # reported by translate, never compiled (control/ir.py)


def _tag(kind: type) -> str:
    return kind.__struct_config__.tag


def test_ir_filter_kinds_are_the_schema_kinds_plus_extension_ref():
    schema_tags = [_tag(k) for k in typing.get_args(schema.Filter)]
    ir_tags = [_tag(k) for k in typing.get_args(ir.Filter)]
    assert len(set(ir_tags)) == len(ir_tags)  # one IR kind per name
    assert set(ir_tags) - IR_ONLY == set(schema_tags)
    assert set(ir.filter_kinds(ir.BackendFilter)) <= set(ir_tags)


def test_ir_filter_kinds_dump_their_tag_as_type():
    for kind in typing.get_args(ir.Filter):
        assert kind.__struct_config__.tag_field == "type"
        assert kind.__struct_config__.frozen


def test_compile_maps_every_schema_filter_kind_from_exactly_one_ir_kind():
    by_tag = {_tag(k): k for k in typing.get_args(schema.Filter)}
    assert set(comp.FILTERS) == {k for k in typing.get_args(ir.Filter) if _tag(k) not in IR_ONLY}
    produced = []
    for kind, function in comp.FILTERS.items():
        out = typing.get_type_hints(function)["return"]
        assert out is by_tag[_tag(kind)], f"{function.__name__} must build schema.{_tag(kind)}"
        produced.append(out)
    assert sorted(map(_tag, produced)) == sorted(by_tag)


def _types(info: mi.Type, seen: set[int]) -> typing.Iterator[mi.Type]:
    """Every type an IR field can hold, depth first."""
    if id(info) in seen:
        return
    seen.add(id(info))
    yield info
    if isinstance(info, mi.StructType):
        for field in info.fields:
            yield from _types(field.type, seen)
    elif isinstance(info, mi.UnionType):
        for t in info.types:
            yield from _types(t, seen)
    elif isinstance(info, (mi.VarTupleType, mi.ListType, mi.SetType, mi.FrozenSetType)):
        yield from _types(info.item_type, seen)
    elif isinstance(info, mi.TupleType):
        for t in info.item_types:
            yield from _types(t, seen)
    elif isinstance(info, mi.DictType):
        yield from _types(info.value_type, seen)


def test_ir_holds_no_dict_and_no_any():
    untyped = [t for t in _types(mi.type_info(ir.IR), set()) if isinstance(t, (mi.DictType, mi.AnyType))]
    assert untyped == []


def _translated(case: str) -> ir.IR:
    cache = ObjectCache()
    cache.apply(FileSource(TESTDATA / case).load())
    return translate(cache.objects()).ir


CASES = ["filters.in.yaml", "fluxgateroute.in.yaml", "ingress-annotations.in.yaml", "retries-cors.in.yaml"]


@pytest.mark.parametrize("case", CASES)
def test_ir_round_trips_through_its_dump(case):
    tree = _translated(case)
    assert msgspec.convert(tree.to_builtins(), ir.IR) == tree
    again = msgspec.json.decode(msgspec.json.encode(tree), type=ir.IR)
    assert again == tree
    assert compile_table(again) == compile_table(tree)


def test_ir_round_trip_keeps_every_filter_kind():
    kinds = {type(f) for case in CASES for route in _translated(case).routes for rule in route.rules
             for f in rule.filters + tuple(f for b in rule.backends for f in b.filters)}
    assert kinds == set(comp.FILTERS)  # the cases above exercise every compiled kind


def test_ir_dump_shows_a_filter_by_type_without_its_defaults():
    rule = ir.Rule(index=0, matches=(ir.RouteMatch(path=ir.PathMatch(type="PathPrefix", value="/")),), filters=(
        ir.URLRewrite(path=ir.PathModifier(type="ReplacePrefixMatch", value="/v2")),
        ir.RequestRedirect(scheme="https", status_code=301),
    ))
    dump = ir.IR(routes=(ir.Route(namespace="default", name="web", rules=(rule,)),)).to_builtins()
    yaml.safe_dump(dump)  # plain data: no tuples
    assert dump["routes"][0]["rules"][0]["filters"] == [
        {"type": "URLRewrite", "path": {"type": "ReplacePrefixMatch", "value": "/v2"}},
        {"type": "RequestRedirect", "scheme": "https", "status_code": 301},
    ]


@pytest.mark.parametrize("kind, expected", [
    (ir.RequestHeaderModifier(set=(ir.HeaderValue(name="X-A", value="1"),), remove=("X-Debug",)),
     schema.RequestHeaderModifier(set=(schema.HeaderValue("X-A", "1"),), remove=("x-debug",))),
    (ir.ResponseHeaderModifier(add=(ir.HeaderValue(name="Vary", value="Origin"),)),
     schema.ResponseHeaderModifier(add=(schema.HeaderValue("Vary", "Origin"),))),
    (ir.RequestRedirect(scheme="https", port=8443, path=ir.PathModifier(type="ReplaceFullPath", value="/x")),
     schema.RequestRedirect(scheme="https", port=8443, path_type="ReplaceFullPath", path="/x", status=302)),
    (ir.URLRewrite(hostname="in.example.com"), schema.URLRewrite(hostname="in.example.com")),
    (ir.RequestMirror(cluster="default/shadow:80", percent=12.5),
     schema.RequestMirror(cluster="default/shadow:80", percent=12.5)),
    (ir.RequestHeaderTemplate(set=(ir.HeaderValue(name="X-Ip", value="ip=%{client_ip}"),)),
     schema.RequestHeaderTemplate(set=(schema.HeaderTemplate("X-Ip", (
         schema.TemplatePart("text", "ip="), schema.TemplatePart("client_ip", ""))),))),
    (ir.CORS(allow_origins=("https://A.example",), allow_headers=("X-Token",), expose_headers=("X-Id",),
             allow_credentials=True, max_age=60),
     schema.CORS(allow_origins=("https://a.example",), allow_headers=("x-token",), expose_headers=("X-Id",),
                 allow_credentials=True, max_age=60)),
], ids=lambda v: type(v).__name__)
def test_compile_filter_lays_out_each_kind(kind, expected):
    assert comp.FILTERS[type(kind)](kind) == expected
