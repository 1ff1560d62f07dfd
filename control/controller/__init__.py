"""``fluxgate controller``: the control plane (leader election, the status writer, the webhook)."""

from control.controller.controller import Controller

__all__ = ["Controller"]
