"""The Kubernetes source's fixtures (fixtures.py), for every test in this directory."""

from tests.control.sources.kubernetes.fixtures import _backlog, kube, servers, sources  # noqa: F401
