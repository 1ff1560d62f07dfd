"""Request ids: the client's ``x-request-id`` when valid, else a new one.

A new id is this worker process's random prefix (48 bits from os.urandom, drawn
when the module is imported, once per worker) and a counter: unique across
workers and pods without coordination, and one bytes formatting per request.
"""

from __future__ import annotations

import itertools
import os
import re

MAX_LENGTH = 128
# Printable ASCII (space to tilde), 1 to 128 characters: anything else is replaced.
_VALID = re.compile(rb"[\x20-\x7e]{1,128}")
_PREFIX = os.urandom(6).hex().encode() + b"-"
_COUNTER = itertools.count(1)


def new() -> bytes:
    return b"%s%x" % (_PREFIX, next(_COUNTER))


def valid(value: bytes) -> bool:
    return _VALID.fullmatch(value) is not None
