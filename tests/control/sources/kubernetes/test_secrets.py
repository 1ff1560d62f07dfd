"""Secrets (control/sources/kubernetes/secrets.py): which are referenced, and that
only referenced ones count as a change."""

from __future__ import annotations

from control.sources.kubernetes import GATEWAY, SECRET, secret_refs
from control.sources.kubernetes.secrets import SecretRefs
from control.sources.kubernetes.store import Store
from tests.control.sources.kubernetes.fixtures import (_b64, caught_up, gateway, keys, tls_secret,
                                                       until, watch_of)


def test_kubernetes_source_unreferenced_secret_does_not_rebuild(kube, sources):
    source = sources(kube.url)
    fp = source.fingerprint()
    kube.apply(tls_secret("orphan"))
    kube.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "opaque"}, "data": {"k": _b64("v")}})
    caught_up(source, kube, "Secret [type=kubernetes.io/tls]")
    assert source.fingerprint() == fp
    assert watch_of(source, "Secret [type=kubernetes.io/tls]")["objects"] == 1  # Opaque never arrives
    assert not keys(source, "Secret")  # the cache does not read Secrets (yet)


def test_kubernetes_source_referenced_secret_change_counts(kube, sources):
    kube.apply(tls_secret("cert"))
    source = sources(kube.url)
    kube.apply(gateway(secret="cert"))
    until(lambda: ("Gateway", "default", "gw") in keys(source), what="the Gateway")

    fp = source.fingerprint()
    kube.apply(tls_secret("cert", value="b"))
    until(lambda: source.fingerprint() != fp, what="the referenced Secret to count")

    kube.apply(gateway())  # the reference is gone
    until(lambda: keys(source, "Gateway") and watch_of(source, "Gateway")["resourceVersion"]
          == str(kube.resource_version), what="the Gateway change")
    fp = source.fingerprint()
    kube.apply(tls_secret("cert", value="c"))
    caught_up(source, kube, "Secret [type=kubernetes.io/tls]")
    assert source.fingerprint() == fp


def test_secret_refs_reads_listener_certificate_refs_and_ingress_tls():
    gw = gateway(namespace="edge", secret="a")
    gw["spec"]["listeners"][0]["tls"]["certificateRefs"] += [
        {"name": "b", "namespace": "certs"},
        {"name": "c", "group": "example.com", "kind": "Vault"},  # not a Secret
    ]
    assert secret_refs("Gateway", gw) == {("edge", "a"), ("certs", "b")}
    ingress = {"metadata": {"name": "i", "namespace": "web"},
               "spec": {"tls": [{"secretName": "x"}, {"hosts": ["a.example.com"]}]}}
    assert secret_refs("Ingress", ingress) == {("web", "x")}
    assert secret_refs("Gateway", {"metadata": {"name": "broken"}, "spec": "nonsense"}) == frozenset()


# --- the references alone (no API server) --------------------------------------------------


def test_secret_refs_keep_a_secret_named_twice_until_neither_names_it():
    refs = SecretRefs()
    refs.track("Gateway", ("default", "gw"), gateway(secret="cert"))
    refs.track("Ingress", ("default", "web"), {"metadata": {"name": "web"},
                                               "spec": {"tls": [{"secretName": "cert"}]}})
    assert refs.keys() == {("default", "cert")}
    refs.track("Gateway", ("default", "gw"), gateway())  # the Gateway no longer names it
    assert refs.referenced(("default", "cert"))
    refs.track("Ingress", ("default", "web"), None)  # the Ingress is deleted
    assert not refs.referenced(("default", "cert")) and refs.keys() == set()


def test_referenced_secret_bumps_the_store_generation_only_while_referenced():
    store = Store()
    gateways, secrets = store.bucket(GATEWAY), store.bucket(SECRET)
    generation = store.generation
    assert not store.event(secrets, "ADDED", tls_secret("cert"))
    assert store.generation == generation
    assert store.event(gateways, "ADDED", gateway(secret="cert"))
    assert store.event(secrets, "MODIFIED", tls_secret("cert", value="b"))
    assert store.event(gateways, "MODIFIED", gateway())
    generation = store.generation
    assert not store.event(secrets, "DELETED", tls_secret("cert", value="b"))
    assert store.generation == generation
