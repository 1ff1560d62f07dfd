"""Small configurations for the command tests, one YAML document each."""

from __future__ import annotations

from pathlib import Path

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: fluxgate
  listeners: [{name: http, port: 8080, protocol: HTTP}]
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
"""

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"""

# Valid YAML and a valid object, but its backend Service does not exist.
ROUTE_TO_NOWHERE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: nowhere}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: missing, port: 80}]}]
"""

BAD_PORT = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bad}
spec:
  gatewayClassName: fluxgate
  listeners: [{name: http, port: 70000, protocol: HTTP}]
"""

# A valid Gateway with one listener FluxGate cannot serve (not Accepted).
TCP_LISTENER = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mixed}
spec:
  gatewayClassName: fluxgate
  listeners:
  - {name: http, port: 9000, protocol: HTTP}
  - {name: tcp, port: 9001, protocol: TCP}
"""

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: b}
"""

OTHER_CLASS = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs}
spec:
  gatewayClassName: nginx
  listeners: [{name: http, port: 8080, protocol: HTTP}]
"""

NOT_YAML = "kind: Gateway\nmetadata: {name: [unclosed\n"


def write(path: Path, *documents: str) -> Path:
    """Write ``documents`` as one multi-document YAML file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n".join(documents))
    return path
