"""The request corpus: one ``.http`` file per case (format in corpus/README.md).

A case file is a small YAML header, a line ``---``, then the raw request
bytes written with escapes. Newlines in the raw part are layout only: every
byte on the wire is spelled in the text, so CRLF is ``\\r\\n``, a bare LF is
``\\n`` alone, and nothing depends on an editor's line endings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CORPUS = Path(__file__).resolve().parent / "corpus"

KEYS = {"about", "class", "expect", "close", "gateway", "upstream_requests", "upstream", "location"}
UPSTREAM_KEYS = {"backend", "path", "method", "headers", "lacks", "body", "version"}
_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\", "{": b"{", "}": b"}"}


class CorpusError(ValueError):
    pass


def decode(text: str) -> bytes:
    """The bytes a raw section spells (escapes: README.md)."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\n":
            i += 1
            continue
        if c != "\\":
            if ord(c) > 0x7E or (ord(c) < 0x20):
                raise CorpusError(f"raw character {c!r} must be escaped")
            out += c.encode()
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "x":
            hexdigits = text[i + 2:i + 4]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", hexdigits):
                raise CorpusError(f"bad \\x escape at {text[i:i + 4]!r}")
            out.append(int(hexdigits, 16))
            i += 4
        elif nxt == "*":
            # \*N{text}: text (itself escaped) repeated N times.
            m = re.match(r"\\\*(\d+)\{", text[i:])
            if m is None:
                raise CorpusError(f"bad repeat at {text[i:i + 12]!r}")
            start = i + m.end()
            end, depth = start, 1
            while end < len(text):
                ch = text[end]
                if ch == "\\":
                    end += 2
                    continue
                depth += (ch == "{") - (ch == "}")
                if depth == 0:
                    break
                end += 1
            if end >= len(text):
                raise CorpusError("unterminated repeat")
            out += decode(text[start:end]) * int(m.group(1))
            i = end + 1
        elif nxt in _ESCAPES:
            out += _ESCAPES[nxt]
            i += 2
        else:
            raise CorpusError(f"unknown escape \\{nxt}")
    return bytes(out)


@dataclass
class Expected:
    """One response slot: the statuses allowed there (None: no response)."""

    allowed: tuple[int | None, ...]

    def __str__(self) -> str:
        return "|".join("none" if s is None else str(s) for s in self.allowed)


@dataclass
class Case:
    name: str  # "invalid/cl-te"
    path: Path
    about: str
    klass: str
    raw: bytes
    expect: list[Expected]
    close: bool | None  # None: not checked
    gateway: str
    upstream_requests: int
    upstream: list[dict] = field(default_factory=list)
    location: str | None = None

    @property
    def valid(self) -> bool:
        return self.name.startswith("valid/")


def _expect(value) -> list[Expected]:
    out = []
    for token in str(value).split():
        allowed = tuple(None if s == "none" else int(s) for s in token.split("|"))
        out.append(Expected(allowed))
    if not out:
        raise CorpusError("expect: is empty")
    return out


def load(path: Path) -> Case:
    text = path.read_text(encoding="ascii")
    head, sep, raw = text.partition("\n---\n")
    if not sep:
        raise CorpusError(f"{path}: no '---' line between header and request")
    for n, line in enumerate(raw.split("\n"), 1):
        if line != line.rstrip():
            raise CorpusError(f"{path}: trailing whitespace in raw line {n}; write \\x20")
    meta = yaml.safe_load(head) or {}
    unknown = set(meta) - KEYS
    if unknown:
        raise CorpusError(f"{path}: unknown keys {sorted(unknown)}")
    for key in ("about", "class", "expect", "upstream_requests"):
        if key not in meta:
            raise CorpusError(f"{path}: missing {key}:")
    upstream = meta.get("upstream") or []
    if isinstance(upstream, dict):
        upstream = [upstream]
    for u in upstream:
        if set(u) - UPSTREAM_KEYS:
            raise CorpusError(f"{path}: unknown upstream keys {sorted(set(u) - UPSTREAM_KEYS)}")
    close = meta.get("close", "any")
    case = Case(
        name=f"{path.parent.name}/{path.stem}",
        path=path,
        about=" ".join(str(meta["about"]).split()),
        klass=str(meta["class"]),
        raw=decode(raw),
        expect=_expect(meta["expect"]),
        close=None if close == "any" else bool(close),
        gateway=str(meta.get("gateway", "default")),
        upstream_requests=int(meta["upstream_requests"]),
        upstream=upstream,
        location=meta.get("location"),
    )
    if case.valid and b"smuggled" in case.raw.lower():
        raise CorpusError(f"{path}: 'smuggled' marks bytes that must never reach an upstream")
    return case


def all_cases() -> list[Case]:
    return [load(p) for p in sorted(CORPUS.glob("*/*.http"))]
