"""Both sources emit the same events (``Changes``) for the same objects.

The pipeline cannot tell a file source from a Kubernetes source: given the
same objects and the same edits - one written to YAML files, one applied to
the fake API server (tests/kubeapi, over real HTTP) - each ``changes()``
call of one names the same objects to upsert, with equal typed content, and
the same objects to delete, as the other's (the API server's own metadata,
creationTimestamp and generation, aside).
"""

from __future__ import annotations

import copy

import msgspec
import yaml

from control.objects import validation
from control.sources.files import FileSource
from tests.control.sources.kubernetes.fixtures import (  # noqa: F401  (fixtures)
    _backlog, caught_up, gateway, kube, route, servers, service, sources)

GW = "gateway.networking.k8s.io/v1"
WATCHES = ("Gateway", "HTTPRoute", "Service", "Namespace")


# What the API server sets on every object and a file does not hold.
SERVER_SET = ("creationTimestamp", "generation")


def _typed(obj) -> dict:
    data = msgspec.to_builtins(validation.parse(obj))
    data["metadata"] = {k: v for k, v in data["metadata"].items() if k not in SERVER_SET}
    return data


def _events(changes) -> tuple[dict, set]:
    """Upserts by key with their typed content; deletes by key."""
    upserts = {validation.identify(o): _typed(o) for o in changes.upserts}
    deletes = {validation.identify(o) for o in changes.deletes}
    assert len(upserts) == len(changes.upserts)  # one object per key
    return upserts, deletes


class _Files:
    """The file side: one YAML file per object, named for it."""

    def __init__(self, root) -> None:
        self.root = root

    def _path(self, obj: dict):
        meta = obj["metadata"]
        return self.root / f"{obj['kind']}-{meta.get('namespace', '')}-{meta['name']}.yaml"

    def apply(self, obj: dict) -> None:
        path = self._path(obj)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(obj))
        tmp.rename(path)

    def delete(self, obj: dict) -> None:
        self._path(obj).unlink()


def test_file_and_kubernetes_sources_emit_the_same_changes(kube, sources, tmp_path):
    files = _Files(tmp_path)
    k8s = sources(kube.url)
    # The API server's own objects (its namespaces), as the file side's too.
    first = k8s.changes()
    for obj in first.upserts:
        files.apply(obj.raw)
    file_source = FileSource(tmp_path)
    assert _events(file_source.changes()) == _events(first)

    web, r1, r2 = service("web"), route("r1"), route("r2", path="/two")
    web["spec"]["ports"][0]["targetPort"] = 80  # what the API server defaults it to
    edited = route("r1", path="/v2")
    with_status = copy.deepcopy(edited)
    with_status["status"] = {"parents": []}
    steps = [
        [gateway(), web, r1],  # new objects
        [edited],  # one edit
        [r2, ("delete", r1)],  # one added, one gone
        [with_status],  # a status-only change: both hand it out, the cache ignores it
        [("delete", web), ("delete", r2)],
    ]
    for step in steps:
        for item in step:
            if isinstance(item, tuple):
                obj = item[1]
                kube.delete(obj["apiVersion"], obj["kind"], obj["metadata"]["name"],
                            obj["metadata"].get("namespace"))
                files.delete(obj)
            else:
                kube.apply(copy.deepcopy(item))
                files.apply(item)
        for watch in WATCHES:
            caught_up(k8s, kube, watch)
        from_files, from_kube = _events(file_source.changes()), _events(k8s.changes())
        assert from_files == from_kube, step
        assert from_files[0] or from_files[1]  # every step is an event
