"""The reflector (control/sources/kubernetes/reflector.py), through the source:
list then watch, pages, and recovery from every failure (unreachable API,
410 Gone, a cut stream, resync and re-list timers, a CRD that is not installed).
"""

from __future__ import annotations

import socket
import time

from control.sources.kubernetes import Settings
from tests.control.sources.kubernetes.fixtures import keys, route, service, until, watch_of
from tests.kubeapi.catalog import initial_crds


def test_kubernetes_source_lists_then_watches(kube, sources):
    kube.apply(service("before"))
    source = sources(kube.url)
    assert ("Service", "default", "before") in keys(source)
    first = source.fingerprint()

    kube.apply(service("after"))
    until(lambda: ("Service", "default", "after") in keys(source), what="the watch event")
    assert source.fingerprint() != first

    kube.delete("v1", "Service", "before")
    until(lambda: ("Service", "default", "before") not in keys(source), what="the deletion")
    assert watch_of(source, "Service")["lists"] == 1  # all of it by watch, no re-list


def test_kubernetes_source_lists_in_pages(kube, sources):
    for i in range(7):
        kube.apply(service(f"s{i}"))
    source = sources(kube.url, list_limit=3)
    assert {name for _, _, name in keys(source, "Service")} == {f"s{i}" for i in range(7)}


def test_kubernetes_source_unreachable_api_retries_until_it_answers(servers, sources):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = sources(f"http://127.0.0.1:{port}", wait=False)
    until(lambda: "connection refused" in source.waiting(), what="the error in waiting()")
    assert not source.synced
    kube = servers(port)
    kube.apply(service("web"))
    until(lambda: source.synced, what="the lists once the API answers")
    assert ("Service", "default", "web") in keys(source)


def test_kubernetes_source_relists_after_410_gone(servers, sources):
    kube = servers(bookmark_interval=60)  # no bookmark moves the watches' versions on
    source = sources(kube.url)
    # Every watch open first: one opened after the next write would start at its version
    # (the bookmark a watch begins with) and rightly see no 410.
    assert kube.wait_for_watches(len(source.describe()))
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unwatched"}})
    kube.compact()  # every watch's version is now older than the history
    kube.drop_watches()
    kube.apply(route("r"))  # after the cut: only the re-list (or the watch after it) can carry it
    until(lambda: all(d["gone"] >= 1 for d in source.describe()), what="410 on every watch")
    until(lambda: ("HTTPRoute", "default", "r") in keys(source), what="the route after the re-list")
    until(lambda: all(d["lists"] == 2 for d in source.describe()), what="one re-list per watch")

    kube.apply(route("r2"))  # and the watch goes on from the re-list's version
    until(lambda: ("HTTPRoute", "default", "r2") in keys(source), what="the next event")


def test_kubernetes_source_dropped_watch_resumes_from_its_version(kube, sources):
    source = sources(kube.url)
    assert kube.wait_for_watches(len(source.describe()))
    kube.drop_watches()  # mid-stream: the sockets are cut
    kube.apply(service("after-drop"))
    until(lambda: ("Service", "default", "after-drop") in keys(source), what="the change after the drop")
    service_watch = watch_of(source, "Service")
    assert service_watch["lists"] == 1 and service_watch["watches"] >= 2 and service_watch["gone"] == 0
    assert all(d["error"] == "" or d["synced"] for d in source.describe())


def test_kubernetes_source_resync_renews_the_watch_without_a_list(kube, sources):
    kube.apply(service("web"))
    source = sources(kube.url, Settings(resync_seconds=1))
    fp = source.fingerprint()
    until(lambda: watch_of(source, "Service")["watches"] >= 3, timeout=6, what="two watch renewals")
    assert watch_of(source, "Service")["lists"] == 1  # resumed from its resourceVersion
    assert source.fingerprint() == fp  # nothing differed: nothing to rebuild
    kube.apply(service("after-renewals"))  # and the renewed watch still sees changes
    until(lambda: ("Service", "default", "after-renewals") in keys(source), what="a change after renewals")


def test_kubernetes_source_relists_on_its_timer_without_a_rebuild(kube, sources):
    kube.apply(service("web"))
    source = sources(kube.url, Settings(resync_seconds=600, relist_seconds=1))
    fp = source.fingerprint()
    until(lambda: watch_of(source, "Service")["lists"] >= 2, timeout=5, what="the timed re-list")
    assert source.fingerprint() == fp  # nothing differed: nothing to rebuild


def test_kubernetes_source_close_ends_every_thread_quickly(kube, sources):
    source = sources(kube.url)
    threads = list(source._threads)
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 2
    assert not any(t.is_alive() for t in threads)


def test_kubernetes_source_treats_a_kind_whose_crd_is_missing_as_empty_until_it_is_installed(
        kube, sources):
    crd = next(c for c in initial_crds() if c["spec"]["names"]["kind"] == "FluxGateRoute")
    assert kube.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"])
    kube.apply(route("r"))
    source = sources(kube.url)  # waits for synced: a missing CRD does not block it
    assert ("HTTPRoute", "default", "r") in keys(source)
    assert watch_of(source, "FluxGateRoute")["error"].startswith("not installed")
    assert source.waiting() == ""

    kube.apply(crd)  # installed later: seen at the next look, and watched from then on
    kube.apply({"apiVersion": "fluxgate.io/v1alpha3", "kind": "FluxGateRoute",
                "metadata": {"name": "f", "namespace": "default"},
                "spec": {"parentRefs": [{"name": "gw"}], "rules": []}})
    until(lambda: ("FluxGateRoute", "default", "f") in keys(source),
          what="the FluxGateRoute once its CRD is installed")
    assert watch_of(source, "FluxGateRoute")["error"] == ""
