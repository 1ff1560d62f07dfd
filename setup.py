"""Build the data path's compiled modules (Cython), when Cython and a C compiler are there.

Every module listed in ``NATIVE`` is plain Python (its ``.py`` is the source
and the fallback) with a ``.pxd`` beside it that declares its classes'
layout for Cython. Built, each compiles to an extension module of the same
name, which Python imports in preference to the ``.py``; not built (no
compiler, or ``FLUXGATE_BUILD_NATIVE=0``), the ``.py`` is used. A worker can
be told to use the ``.py`` modules anyway: ``FLUXGATE_NATIVE=false``
(dataplane/__init__.py). The ``ACCELERATORS`` there are Cython-only
modules (a ``.pyx``): built with the others, hidden by FLUXGATE_NATIVE=false,
and their importers fall back to Python code of their own.
tests/dataplane/test_native.py checks both.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dataplane import ACCELERATORS, NATIVE  # noqa: E402  (the one list: dataplane/__init__.py)


def extensions():
    if os.environ.get("FLUXGATE_BUILD_NATIVE", "1") == "0":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:  # no Cython in the build environment: pure Python
        return []
    modules = cythonize(
        [name.replace(".", "/") + ".py" for name in NATIVE]
        + [name.replace(".", "/") + ".pyx" for name in ACCELERATORS], language_level=3, quiet=True,
        # Types come from the .pxd files only: annotations in the .py stay documentation.
        compiler_directives={"annotation_typing": False, "binding": False, "embedsignature": False},
    )
    for ext in modules:
        ext.optional = True  # a failed compile leaves the pure-Python module in place
    return modules


setup(ext_modules=extensions())
