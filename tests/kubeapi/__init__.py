"""A Kubernetes API server for tests (see server.py for its rules and its gaps).

In-process::

    with KubeAPIServer() as api:          # or KubeAPIServer().start() ... .stop()
        configuration.host = api.url

As a process (for end-to-end tests)::

    proc = KubeAPIProcess().start()       # python -m tests.kubeapi --port 0
    ...
    proc.stop()
"""

from .process import KubeAPIProcess
from .server import KubeAPIServer

__all__ = ["KubeAPIProcess", "KubeAPIServer"]
