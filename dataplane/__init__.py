"""The data plane: worker processes that serve the route table.

The hot modules (``NATIVE``) are plain Python, compiled with Cython when the
package is built (setup.py; each ``.pxd`` beside a ``.py`` declares its
layout). Python imports a compiled module in preference to its source, so
the compiled path is chosen whenever it was built, and the ``.py`` is used
wherever it was not. ``FLUXGATE_NATIVE=false`` makes a process use the
``.py`` modules even when compiled ones are there (to rule them out when
hunting a bug); it must be decided before any of them is imported, so it is
read here, from the environment, which workers inherit from the control
process (control/config.py validates it there).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

NATIVE = (
    "dataplane.limits", "dataplane.deadline", "dataplane.flow", "dataplane.outbox",
    "dataplane.downstream", "dataplane.request", "dataplane.dispatch", "dataplane.exchange",
    "dataplane.protocol", "dataplane.upstream.connection", "dataplane.upstream.pool", "dataplane.metrics",
    "dataplane.accesslog", "dataplane.tracing",
)
# Cython-only modules (a .pyx, no .py): each is imported by a NATIVE module
# that falls back to its own pure-Python code when the import fails, as it
# does with FLUXGATE_NATIVE=false or without a build.
ACCELERATORS = ("dataplane._logline",)
_OFF = ("0", "false", "no", "off")


class _SourceOnly(importlib.abc.MetaPathFinder):
    """Finds the ``NATIVE`` modules' ``.py`` files, never their compiled twins."""

    def find_spec(self, fullname, path, target=None):
        if fullname in ACCELERATORS:
            raise ModuleNotFoundError(f"{fullname}: FLUXGATE_NATIVE=false", name=fullname)
        if fullname not in NATIVE or not path:
            return None
        loader = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, loader).find_spec(fullname)
            if spec is not None:
                return spec
        return None


if os.environ.get("FLUXGATE_NATIVE", "true").strip().lower() in _OFF:
    sys.meta_path.insert(0, _SourceOnly())


def compiled() -> list[str]:
    """The ``NATIVE`` modules and ``ACCELERATORS`` this process runs compiled (imported ones only)."""
    return [name for name in NATIVE + ACCELERATORS
            if name in sys.modules and not (sys.modules[name].__file__ or "").endswith(".py")]
