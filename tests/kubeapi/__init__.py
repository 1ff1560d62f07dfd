"""A Kubernetes API server for tests (see server.py for its rules and its gaps).

In-process::

    with KubeAPIServer() as api:          # or KubeAPIServer().start() ... .stop()
        configuration.host = api.url

As a process (for end-to-end tests)::

    proc = KubeAPIProcess().start()       # python -m tests.kubeapi --port 0
    ...
    proc.stop()
"""

import contextlib

from .process import KubeAPIProcess
from .server import KubeAPIServer

__all__ = ["KubeAPIProcess", "KubeAPIServer", "client_for"]


@contextlib.contextmanager
def client_for(url: str):
    """A real kubernetes ApiClient for the server at ``url``, closed after use."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = url
    api = client.ApiClient(configuration)
    try:
        yield api
    finally:
        api.close()
