"""ObjectCache: last good versions, failed files, duplicates, change detection."""

from __future__ import annotations

from control.cache import ObjectCache
from control.compile import compile_table
from control.sources.files import FileSource
from control.translate import translate
from control.objects.resources import ObjectKey

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec: {gatewayClassName: fluxgate, listeners: [{name: http, port: %s, protocol: HTTP}]}
"""
ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: %s}
spec:
  parentRefs: [{name: gw}]
  rules: [{matches: [{path: {value: "%s"}}]}]
"""
GW_KEY = ObjectKey("Gateway", "default", "gw")
WEB_KEY = ObjectKey("HTTPRoute", "default", "web")


def _apply(cache: ObjectCache, path) -> bool:
    return cache.apply(FileSource(path).load())


def _path(cache: ObjectCache, key: ObjectKey) -> str:
    return cache.get(key).spec.rules[0].matches[0].path.value


def test_cache_apply_reports_a_change_only_when_objects_change(write, tmp_path):
    path = write("gw.yaml", GATEWAY % 80)
    cache = ObjectCache()
    assert _apply(cache, tmp_path) is True
    assert _apply(cache, tmp_path) is False
    # Annotations and status are not read: changing them does not matter.
    path.write_text(GATEWAY % 80 + "status: {conditions: []}\n")
    path.write_text(path.read_text().replace("metadata: {name: gw}",
                                             "metadata: {name: gw, annotations: {a: b}}"))
    assert _apply(cache, tmp_path) is False
    path.write_text(GATEWAY % 81)
    assert _apply(cache, tmp_path) is True
    assert cache.get(GW_KEY).spec.listeners[0].port == 81


def test_cache_defaults_namespaces_by_scope(write, tmp_path):
    write("objs.yaml", GATEWAY % 80 + """---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: fluxgate, namespace: ignored}
spec: {controllerName: fluxgate.io/gateway-controller}
""")
    cache = ObjectCache()
    _apply(cache, tmp_path)
    assert GW_KEY in cache
    assert ObjectKey("GatewayClass", "", "fluxgate") in cache


def test_cache_invalid_object_keeps_last_good_version(write, tmp_path):
    path = write("web.yaml", ROUTE % ("web", "/good"))
    cache = ObjectCache()
    _apply(cache, tmp_path)
    path.write_text(ROUTE % ("web", "no-slash"))
    assert _apply(cache, tmp_path) is False  # still the last good version
    assert _path(cache, WEB_KEY) == "/good"
    (error,) = cache.errors
    assert "keeping the last good version" in str(error)
    assert "spec.rules[0].matches[0].path.value" in str(error)
    path.write_text(ROUTE % ("web", "/better"))
    assert _apply(cache, tmp_path) is True
    assert _path(cache, WEB_KEY) == "/better" and not cache.errors


def test_cache_invalid_object_never_seen_valid_is_absent(write, tmp_path):
    write("web.yaml", ROUTE % ("web", "no-slash"))
    cache = ObjectCache()
    assert _apply(cache, tmp_path) is False
    assert WEB_KEY not in cache and len(cache) == 0
    assert "rejected:" in str(cache.errors[0])


def test_cache_unparsable_file_keeps_its_previous_objects(write, tmp_path):
    web = write("web.yaml", ROUTE % ("web", "/web") + "---\n" + ROUTE % ("api", "/api"))
    other = write("other.yaml", ROUTE % ("other", "/v1"))
    cache = ObjectCache()
    _apply(cache, tmp_path)
    web.write_text("kind: [broken\n")
    other.write_text(ROUTE % ("other", "/v2"))
    assert _apply(cache, tmp_path) is True  # other.yaml changed
    assert _path(cache, WEB_KEY) == "/web"
    assert _path(cache, ObjectKey("HTTPRoute", "default", "api")) == "/api"
    assert _path(cache, ObjectKey("HTTPRoute", "default", "other")) == "/v2"
    assert "YAML parse error" in str(cache.errors[0])
    # Still broken next time: still kept.
    assert _apply(cache, tmp_path) is False and len(cache) == 3
    # Fixed, with one object removed: now it goes.
    web.write_text(ROUTE % ("web", "/web"))
    assert _apply(cache, tmp_path) is True
    assert len(cache) == 2 and not cache.errors


def test_cache_missing_root_keeps_everything(write, tmp_path):
    write("conf/web.yaml", ROUTE % ("web", "/web"))
    cache = ObjectCache()
    _apply(cache, tmp_path / "conf")
    (tmp_path / "conf" / "web.yaml").rename(tmp_path / "web.yaml")
    (tmp_path / "conf").rmdir()
    assert _apply(cache, tmp_path / "conf") is False
    assert WEB_KEY in cache and cache.errors


def test_cache_object_removed_from_file_is_gone(write, tmp_path):
    path = write("all.yaml", ROUTE % ("web", "/web") + "---\n" + ROUTE % ("api", "/api"))
    cache = ObjectCache()
    _apply(cache, tmp_path)
    path.write_text(ROUTE % ("api", "/api"))
    assert _apply(cache, tmp_path) is True
    assert WEB_KEY not in cache and len(cache) == 1


def test_cache_duplicate_first_in_path_order_wins(write, tmp_path):
    write("b.yaml", ROUTE % ("web", "/from-b"))
    write("a.yaml", ROUTE % ("web", "/from-a"))
    cache = ObjectCache()
    _apply(cache, tmp_path)
    assert _path(cache, WEB_KEY) == "/from-a"
    (error,) = cache.errors
    assert error.file.endswith("b.yaml")
    assert "duplicate of the one in" in error.reason and "a.yaml (document 1)" in error.reason


def test_cache_unknown_kind_is_a_warning_not_an_error(write, tmp_path):
    write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n")
    cache = ObjectCache()
    assert _apply(cache, tmp_path) is False
    assert not cache.errors
    (warning,) = cache.warnings
    assert warning.level == "warning" and "unsupported kind ConfigMap" in str(warning)


def test_cache_invalid_object_keeps_the_table_serving(write, tmp_path):
    """End to end: a bad edit leaves the compiled table exactly as it was."""
    write("gw.yaml", GATEWAY % 80)
    route = write("web.yaml", ROUTE % ("web", "/web"))
    cache = ObjectCache()
    _apply(cache, tmp_path)
    before = compile_table(translate(cache.objects()).ir)
    route.write_text(ROUTE % ("web", "/a//b"))
    _apply(cache, tmp_path)
    assert compile_table(translate(cache.objects()).ir) == before
    route.write_text("{{{")
    _apply(cache, tmp_path)
    assert compile_table(translate(cache.objects()).ir) == before
