"""compile_table(): sockets, virtual hosts, precedence, interning, determinism."""

from __future__ import annotations

import msgspec
import pytest

from control import ir
from control.compile import compile_table, listener_name, normalize_prefix, table_to_builtins
from control.translate import translate
from shm import codec, schema

BASE = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: fluxgate
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gw}]
"""


def _table(parse, rules: str, hostnames: str = "") -> schema.CompiledTable:
    text = BASE + (f"  hostnames: {hostnames}\n" if hostnames else "") + f"  rules: {rules}\n"
    return compile_table(translate(parse(text)).ir, source="test")


def _paths(vhost: schema.VirtualHost) -> list[tuple[str, str]]:
    return [(type(e.match.path).__name__, e.match.path.value) for e in vhost.entries]


def _listener(port: int, *attachments: ir.Attachment, programmed=True, address="") -> ir.Listener:
    return ir.Listener(gateway="default/gw", name=f"l{port}", addresses=(address,), port=port,
                       protocol="HTTP", programmed=programmed, attachments=attachments)


@pytest.mark.parametrize("value, expected", [("/", "/"), ("/a/", "/a"), ("/a//", "/a"), ("/a", "/a")])
def test_compile_normalize_prefix_drops_trailing_slashes(value, expected):
    assert normalize_prefix(value) == expected


def test_compile_listener_name_brackets_ipv6():
    assert listener_name("", 80) == ":80"
    assert listener_name("10.0.0.1", 80) == "10.0.0.1:80"
    assert listener_name("::1", 8080) == "[::1]:8080"


def test_compile_orders_exact_regex_then_longest_prefix(parse):
    table = _table(parse, """
  - matches: [{path: {value: /}}, {path: {value: /a/}}, {path: {value: /a/b}}]
  - matches: [{path: {type: Exact, value: /a}}, {path: {type: RegularExpression, value: /a.*}}]""")
    (vhost,) = table.vhosts
    assert _paths(vhost) == [("PathExact", "/a"), ("PathRegex", "/a.*"), ("PathPrefix", "/a/b"),
                             ("PathPrefix", "/a"), ("PathPrefix", "/")]


def test_compile_orders_method_then_headers_then_query(parse):
    table = _table(parse, """
  - matches:
    - queryParams: [{name: a, value: "1"}, {name: b, value: "1"}]
    - headers: [{name: a, value: "1"}]
    - headers: [{name: a, value: "1"}, {name: b, value: "1"}]
    - method: GET
    - {}""")
    entries = table.vhosts[0].entries
    shape = [(e.match.method, len(e.match.headers), len(e.match.query)) for e in entries]
    assert shape == [("GET", 0, 0), ("", 2, 0), ("", 1, 0), ("", 0, 2), ("", 0, 0)]


def test_compile_shares_identical_actions_by_index(parse):
    table = _table(parse, """
  - matches: [{path: {value: /a}}, {path: {value: /b}}]
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /c}}]
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {value: /d}}]
    backendRefs: [{name: web, port: 80, weight: 2}]""")
    (vhost,) = table.vhosts
    assert len(vhost.entries) == 4 and len(vhost.actions) == 2
    # Equal lengths: rule order, then match order.
    assert [e.match.path.value for e in vhost.entries] == ["/a", "/b", "/c", "/d"]
    assert [e.action for e in vhost.entries] == [0, 0, 0, 1]
    assert [e.source.rsplit("#")[1] for e in vhost.entries] == ["0", "0", "1", "2"]


def test_compile_indexes_hosts_exact_then_most_specific_wildcard(parse):
    table = _table(parse, "[{backendRefs: [{name: web, port: 80}]}]",
                   hostnames="['*.example.com', b.example.com, '*.a.example.com', a.example.com]")
    (listener,) = table.listeners
    names = [v.name for v in table.vhosts]
    assert [names[h.vhost] for h in listener.exact] == [":80|a.example.com", ":80|b.example.com"]
    assert [h.host for h in listener.wildcards] == ["*.a.example.com", "*.example.com"]
    assert listener.default_vhost == -1


def test_compile_clusters_are_referenced_sorted_and_unique(parse):
    text = BASE.replace("metadata: {name: web}\nspec: {ports: [{port: 80}]}",
                        "metadata: {name: web}\nspec: {ports: [{name: a, port: 80}, {name: b, port: 81}]}")
    text += "  rules: [{backendRefs: [{name: web, port: 81}, {name: web, port: 80}, {name: web, port: 81}]}]\n"
    table = compile_table(translate(parse(text)).ir)
    assert [c.name for c in table.clusters] == ["default/web:80", "default/web:81"]


def test_compile_skips_unprogrammed_listeners_and_binds_empty_ones():
    route = ir.Route(namespace="default", name="web",
                     rules=(ir.Rule(index=0, matches=(ir.RouteMatch(path=ir.PathMatch(type="PathPrefix", value="/")),)),))
    att = ir.Attachment(route=route.ref, hostnames=("*",))
    table = compile_table(ir.IR(
        listeners=(_listener(443, att, programmed=False), _listener(80), _listener(81, att)),
        routes=(route,),
    ))
    assert [(l.name, l.default_vhost) for l in table.listeners] == [(":80", -1), (":81", 0)]
    assert [v.name for v in table.vhosts] == [":81|*"]


def test_compile_merges_listeners_sharing_a_socket_without_duplicates():
    route = ir.Route(namespace="default", name="web",
                     rules=(ir.Rule(index=0, matches=(ir.RouteMatch(path=ir.PathMatch(type="Exact", value="/")),)),))
    att = ir.Attachment(route=route.ref, hostnames=("*", "a.example.com"))
    table = compile_table(ir.IR(listeners=(_listener(80, att), _listener(80, att)), routes=(route,)))
    (listener,) = table.listeners
    assert [len(v.entries) for v in table.vhosts] == [1, 1]
    assert listener.default_vhost == 1 and listener.exact[0].vhost == 0


def test_compile_equal_input_gives_equal_output(parse):
    rules = "[{backendRefs: [{name: web, port: 80}]}, {matches: [{path: {value: /x}}]}]"
    assert _table(parse, rules) == _table(parse, rules)


def test_compile_output_encodes_and_decodes_with_the_shm_codec(parse):
    table = _table(parse, """
  - matches: [{path: {type: RegularExpression, value: "/r.*"}, headers: [{name: a, value: b}]}]
    backendRefs: [{name: web, port: 80}, {name: missing, port: 80}]""", hostnames="[a.example.com]")
    encoder = codec.TableEncoder()
    index = codec.decode_index(encoder.encode(table, generation=1))
    assert index.listeners == table.listeners and index.source == "test"
    assert codec.decode_vhost(index.vhosts[0].blob) == table.vhosts[0]
    assert codec.decode_cluster(index.clusters[0].blob) == table.clusters[0]
    encoder.encode(_table(parse, """
  - matches: [{path: {type: RegularExpression, value: "/r.*"}, headers: [{name: a, value: b}]}]
    backendRefs: [{name: web, port: 80}, {name: missing, port: 80}]""", hostnames="[a.example.com]"), 2)
    assert encoder.encoded == 0  # recompiled equal input re-uses every blob


def test_compile_table_to_builtins_names_every_field(parse):
    data = table_to_builtins(_table(parse, "[{matches: [{path: {type: Exact, value: /x}}]}]"))
    entry = data["vhosts"][0]["entries"][0]
    assert entry["match"]["path"] == {"type": "Exact", "value": "/x"}
    assert set(data["listeners"][0]) == set(schema.Listener.__struct_fields__)
    msgspec.json.encode(data)  # plain data all the way down
