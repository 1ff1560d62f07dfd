"""Watches through kubernetes.watch.Watch: history, selectors, bookmarks, expiry, drops."""

from __future__ import annotations

import http.client
import json
import time

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client import ApiException

from tests.kubeapi import KubeAPIServer

G, V, P = "fluxgate.io", "v1alpha3", "fluxgateroutes"


def route(name: str, labels: dict | None = None, hostname: str = "a.example") -> dict:
    meta = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": f"{G}/{V}", "kind": "FluxGateRoute", "metadata": meta,
            "spec": {"hostnames": [hostname]}}


def first_lines(kube, path: str, count: int) -> list[dict]:
    """The first ``count`` events of a raw watch request, without waiting for its end."""
    conn = http.client.HTTPConnection("127.0.0.1", kube.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return [json.loads(resp.readline()) for _ in range(count)]
    finally:
        conn.close()


def kinds(events) -> list[tuple[str, str]]:
    return [(e["type"], e["raw_object"]["metadata"]["name"]) for e in events]


def test_watch_without_a_version_starts_with_added_for_what_exists(core, streams):
    core.create_namespaced_service("default", {"metadata": {"name": "a"}})
    core.create_namespaced_service("default", {"metadata": {"name": "b"}})
    stream = streams(core.list_namespaced_service, "default")
    first = stream.take(2)
    assert kinds(first) == [("ADDED", "a"), ("ADDED", "b")]
    assert first[0]["object"].metadata.name == "a"  # typed V1Service
    core.create_namespaced_service("default", {"metadata": {"name": "c"}})
    assert kinds([stream.next()]) == [("ADDED", "c")]


def test_watch_from_a_version_replays_history_then_goes_live(custom, streams):
    start = custom.list_namespaced_custom_object(G, V, "default", P)["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(G, V, "default", P, route("a"))
    custom.patch_namespaced_custom_object(G, V, "default", P, "a",
                                          {"metadata": {"labels": {"x": "y"}}})
    custom.delete_namespaced_custom_object(G, V, "default", P, "a")
    stream = streams(custom.list_namespaced_custom_object, G, V, "default", P,
                     resource_version=start)
    assert kinds(stream.take(3)) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    custom.create_namespaced_custom_object(G, V, "default", P, route("b"))
    event = stream.next()
    assert kinds([event]) == [("ADDED", "b")]
    assert isinstance(event["object"], dict) and event["object"]["kind"] == "FluxGateRoute"


def test_deleted_event_carries_a_new_resource_version(custom, streams, kube):
    obj = custom.create_namespaced_custom_object(G, V, "default", P, route("a"))
    stream = streams(custom.list_namespaced_custom_object, G, V, "default", P,
                     resource_version=obj["metadata"]["resourceVersion"])
    custom.delete_namespaced_custom_object(G, V, "default", P, "a")
    event = stream.next()
    assert event["type"] == "DELETED"
    deleted_at = int(event["object"]["metadata"]["resourceVersion"])
    assert deleted_at > int(obj["metadata"]["resourceVersion"])
    assert deleted_at == kube.resource_version


def test_label_selector_watch_sends_deleted_when_an_object_stops_matching(custom, streams):
    custom.create_namespaced_custom_object(G, V, "default", P, route("a", {"shard": "one"}))
    custom.create_namespaced_custom_object(G, V, "default", P, route("b", {"shard": "two"}))
    stream = streams(custom.list_namespaced_custom_object, G, V, "default", P,
                     label_selector="shard=one")
    assert kinds([stream.next()]) == [("ADDED", "a")]
    moved = custom.patch_namespaced_custom_object(G, V, "default", P, "a",
                                                  {"metadata": {"labels": {"shard": "two"}}})
    event = stream.next()
    assert kinds([event]) == [("DELETED", "a")]
    # the previous content, at the new resourceVersion
    assert event["object"]["metadata"]["labels"] == {"shard": "one"}
    assert event["object"]["metadata"]["resourceVersion"] == moved["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(G, V, "default", P, "b",
                                          {"metadata": {"labels": {"shard": "one"}}})
    assert kinds([stream.next()]) == [("ADDED", "b")]


def test_field_selector_watch_follows_one_object(core, streams):
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    stream = streams(core.list_namespaced_config_map, "default", field_selector="metadata.name=b")
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    core.patch_namespaced_config_map("b", "default", {"data": {"k": "v"}})
    assert kinds(stream.take(2)) == [("ADDED", "b"), ("MODIFIED", "b")]


def test_namespaced_watch_sees_its_namespace_and_all_namespaces_sees_all(core, custom, streams):
    core.create_namespace({"metadata": {"name": "other"}})
    mine = streams(custom.list_namespaced_custom_object, G, V, "default", P)
    everywhere = streams(custom.list_cluster_custom_object, G, V, P)
    custom.create_namespaced_custom_object(G, V, "other", P, route("x"))
    custom.create_namespaced_custom_object(G, V, "default", P, route("y"))
    assert kinds([mine.next()]) == [("ADDED", "y")]
    got = everywhere.take(2)
    assert sorted((e["raw_object"]["metadata"]["namespace"], e["raw_object"]["metadata"]["name"])
                  for e in got) == [("default", "y"), ("other", "x")]


def test_bookmarks_come_soon_and_then_periodically_when_allowed(custom, streams, kube):
    custom.create_namespaced_custom_object(G, V, "default", P, route("a"))
    stream = streams(custom.list_namespaced_custom_object, G, V, "default", P,
                     allow_watch_bookmarks=True)
    assert stream.next()["type"] == "ADDED"
    bookmarks = [stream.next(skip_bookmarks=False) for _ in range(2)]
    for b in bookmarks:
        assert b["type"] == "BOOKMARK"
        assert set(b["raw_object"]) == {"kind", "apiVersion", "metadata"}
        assert b["raw_object"]["kind"] == "FluxGateRoute"
        assert b["raw_object"]["metadata"] == {"resourceVersion": str(kube.resource_version)}
    assert stream.watch.resource_version == str(kube.resource_version)


def test_service_watch_from_a_version_with_bookmarks(core, streams, kube):
    core.create_namespaced_service("default", {"metadata": {"name": "a"}})
    since = core.list_namespaced_service("default").metadata.resource_version
    core.create_namespaced_service("default", {"metadata": {"name": "b"}})
    stream = streams(core.list_namespaced_service, "default", resource_version=since,
                     allow_watch_bookmarks=True)
    first = stream.next(skip_bookmarks=False)
    assert (first["type"], first["object"].metadata.name) == ("ADDED", "b")
    assert first["object"].spec.cluster_ip.startswith("10.96.")
    bookmark = stream.next(skip_bookmarks=False)
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["raw_object"]["metadata"]["resourceVersion"] == str(kube.resource_version)


def test_no_bookmarks_unless_asked(core, streams, kube):
    stream = streams(core.list_namespaced_config_map, "default")
    assert kube.wait_for_watches(1)
    time.sleep(0.5)  # more than two bookmark intervals of this fixture
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    assert stream.next(skip_bookmarks=False)["type"] == "ADDED"


def test_bookmark_interval_is_configurable():
    with KubeAPIServer(bookmark_interval=30) as server:
        configuration = client.Configuration()
        configuration.host = server.url
        with client.ApiClient(configuration) as api:
            core = client.CoreV1Api(api)
            events = list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                               allow_watch_bookmarks=True, timeout_seconds=1))
    assert [e["type"] for e in events] == ["BOOKMARK"]  # the early one only


def test_timeout_seconds_ends_the_stream_cleanly(core):
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    started = time.monotonic()
    events = list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                       timeout_seconds=1))
    assert kinds(events) == [("ADDED", "a")]
    assert time.monotonic() - started >= 0.9


def test_watch_from_old_version_gets_410_expired(custom, kube):
    custom.create_namespaced_custom_object(G, V, "default", P, route("a"))
    old = kube.resource_version - 1
    custom.create_namespaced_custom_object(G, V, "default", P, route("b"))
    now = kube.compact()
    # with timeout_seconds the client raises at once; without, it retries once, then raises
    for kwargs in ({"timeout_seconds": 5}, {}):
        with pytest.raises(ApiException) as err:
            list(watch.Watch().stream(custom.list_namespaced_custom_object, G, V, "default", P,
                                      resource_version=str(old), **kwargs))
        assert err.value.status == 410
        assert err.value.reason == f"Expired: too old resource version: {old} ({now})"


def test_expired_watch_is_one_error_event_then_the_end_on_the_wire(kube):
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
    kube.compact()
    conn = http.client.HTTPConnection("127.0.0.1", kube.port, timeout=5)
    conn.request("GET", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1")
    resp = conn.getresponse()
    assert resp.status == 200
    lines = resp.read().decode().splitlines()
    conn.close()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "ERROR"
    assert event["object"]["kind"] == "Status" and event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"


def test_history_beyond_its_size_expires():
    with KubeAPIServer(history_size=5) as server:
        configuration = client.Configuration()
        configuration.host = server.url
        with client.ApiClient(configuration) as api:
            core = client.CoreV1Api(api)
            start = core.list_namespaced_config_map("default").metadata.resource_version
            for i in range(6):
                core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
            with pytest.raises(ApiException) as err:
                list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                          resource_version=start, timeout_seconds=2))
            assert err.value.status == 410
            recent = str(server.resource_version - 2)
            events = []
            for event in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                              resource_version=recent):
                events.append(event)
                if len(events) == 2:
                    break
            assert kinds(events) == [("ADDED", "c4"), ("ADDED", "c5")]


def test_drop_watches_cuts_the_stream_mid_way(core, streams, kube):
    stream = streams(core.list_namespaced_config_map, "default")
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    assert stream.next()["type"] == "ADDED"
    assert kube.drop_watches() == 1
    ended = stream.next()
    assert isinstance(ended, urllib3.exceptions.ProtocolError)


def test_graceful_drop_lets_the_client_resume_from_its_last_version(core, streams, kube):
    stream = streams(core.list_namespaced_config_map, "default")
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    assert kinds([stream.next()]) == [("ADDED", "a")]
    assert kube.drop_watches(graceful=True) == 1
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    # Watch.stream reconnects with resource_version of "a": "b" comes once, "a" not again
    assert kinds([stream.next()]) == [("ADDED", "b")]
    assert kube.wait_for_watches(1)
    core.delete_namespaced_config_map("a", "default")
    assert kinds([stream.next()]) == [("DELETED", "a")]


def test_send_initial_events_ends_with_the_initial_events_end_bookmark(core, kube):
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    events = first_lines(kube, "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents"
                         "=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", 2)
    assert [e["type"] for e in events[:2]] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert events[1]["object"]["metadata"]["resourceVersion"] == str(kube.resource_version)


def test_watch_of_a_future_version_waits_then_is_504(core, kube):
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                  resource_version=str(kube.resource_version + 100),
                                  timeout_seconds=1))
    assert err.value.status == 504


def test_watch_path_form_and_watch_one(kube):
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
    start = kube.resource_version
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}})
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"},
                "data": {"k": "v"}})
    events = first_lines(kube, f"/api/v1/watch/namespaces/default/configmaps/b"
                               f"?resourceVersion={start}", 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"), ("MODIFIED", "b")]
