"""Label and field selectors, parsed and matched as apimachinery does.

Label selectors (``labels.Parse``): comma-separated requirements, all of which
must hold: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k`` (exists), ``!k`` (does not exist), ``k>1`` and ``k<1`` (integers).
``!=`` and ``notin`` also match objects without the label. Keys are qualified
names (optional DNS prefix and ``/``), values valid label values.

Field selectors (``fields.ParseSelector``): comma-separated ``path=v``,
``path==v`` or ``path!=v`` terms, ``\\`` escaping ``,``, ``=`` and ``!``.
A path is dotted (``metadata.name``, ``spec.type``); an absent field compares
as the empty string, booleans as ``true``/``false``.

A syntax error raises ``SelectorError``; the HTTP layer answers 400.
"""

from __future__ import annotations

import re

_QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|<|>|[^\s,=!()<>]+)")


class SelectorError(ValueError):
    pass


class LabelSelector:
    """A parsed label selector: ``matches(labels)``; empty matches everything."""

    def __init__(self, text: str | None):
        self.text = text or ""
        self.requirements = _parse_labels(self.text)

    def matches(self, labels: dict | None) -> bool:
        labels = labels or {}
        return all(_holds(req, labels) for req in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise SelectorError(f"unable to parse requirement: unexpected text {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _check_key(key: str) -> str:
    if not _QUALIFIED.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise SelectorError(f'unable to parse requirement: key: Invalid value: "{key}": '
                            "name part must consist of alphanumeric characters, '-', '_' or '.', "
                            "and must start and end with an alphanumeric character")
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(f'unable to parse requirement: values[0][{value}]: Invalid value: '
                            f'"{value}": a valid label must be an empty string or consist of '
                            "alphanumeric characters, '-', '_' or '.', and must start and end "
                            "with an alphanumeric character")
    return value


_OPERATORS = {"=", "==", "!=", "in", "notin", "<", ">"}
_PUNCT = {"=", "==", "!=", "!", "(", ")", ",", "<", ">"}


def _parse_labels(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    toks = _tokens(text)
    reqs: list[tuple[str, str, tuple[str, ...]]] = []
    i = 0

    def peek():
        return toks[i] if i < len(toks) else None

    while i < len(toks):
        tok = toks[i]
        i += 1
        if tok == "!":
            key = peek()
            if key is None or key in _PUNCT:
                raise SelectorError(f"found '{key}', expected: identifier after '!'")
            i += 1
            reqs.append((_check_key(key), "!", ()))
        elif tok in _PUNCT:
            raise SelectorError(f"found '{tok}', expected: !, identifier, or 'end of string'")
        else:
            key = _check_key(tok)
            op = peek()
            if op is None or op == ",":
                reqs.append((key, "exists", ()))
            elif op in _OPERATORS:
                i += 1
                if op in ("in", "notin"):
                    if peek() != "(":
                        raise SelectorError(f"found '{peek()}', expected: '('")
                    i += 1
                    values = []
                    while True:
                        tok = peek()
                        if tok is None:
                            raise SelectorError("found 'end of string', expected: ')'")
                        i += 1
                        if tok == ")":
                            break
                        if tok == ",":
                            continue
                        values.append(_check_value(tok))
                    reqs.append((key, op, tuple(values)))
                else:
                    value = peek()
                    if value is None or value == ",":
                        value = ""
                    elif value in _PUNCT:
                        raise SelectorError(f"found '{value}', expected: identifier")
                    else:
                        i += 1
                    if op in ("<", ">"):
                        if not re.fullmatch(r"-?\d+", value):
                            raise SelectorError(f"unable to parse requirement: for 'Gt', 'Lt' "
                                                f"operators, the value must be an integer: {value}")
                    reqs.append((key, "=" if op == "==" else op, (_check_value(value),)))
            else:
                raise SelectorError(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")
        nxt = peek()
        if nxt is None:
            break
        if nxt != ",":
            raise SelectorError(f"found '{nxt}', expected: ',' or 'end of string'")
        i += 1
        if i == len(toks):
            raise SelectorError("found 'end of string', expected: identifier")
    return reqs


def _holds(req: tuple[str, str, tuple[str, ...]], labels: dict) -> bool:
    key, op, values = req
    if op == "exists":
        return key in labels
    if op == "!":
        return key not in labels
    if op in ("=", "in"):
        return key in labels and labels[key] in values
    if op in ("!=", "notin"):
        return key not in labels or labels[key] not in values
    if key not in labels or not re.fullmatch(r"-?\d+", str(labels[key])):
        return False
    have, want = int(labels[key]), int(values[0])
    return have > want if op == ">" else have < want


class FieldSelector:
    """A parsed field selector: ``matches(obj)``; ``fields`` names the paths used."""

    def __init__(self, text: str | None):
        self.text = text or ""
        self.terms = _parse_fields(self.text)

    @property
    def fields(self) -> list[str]:
        return [path for path, _, _ in self.terms]

    def matches(self, obj: dict) -> bool:
        for path, op, value in self.terms:
            have = field_value(obj, path)
            if (have == value) != (op == "="):
                return False
        return True

    def __bool__(self) -> bool:
        return bool(self.terms)

    def only_name(self) -> str | None:
        """The name when the selector is exactly ``metadata.name=<name>``."""
        if len(self.terms) == 1 and self.terms[0][:2] == ("metadata.name", "="):
            return self.terms[0][2]
        return None


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\,=!":
                raise SelectorError("invalid field selector: unescaped or invalid escape in "
                                    f"{text!r}")
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _find_op(term: str) -> tuple[int, str] | None:
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return i, op
        i += 1
    return None


def _parse_fields(text: str) -> list[tuple[str, str, str]]:
    if not text.strip():
        return []
    terms = []
    for part in _split_unescaped(text, ","):
        found = _find_op(part)
        if found is None or not part[:found[0]].strip():
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        at, op = found
        path = part[:at].strip()
        value = _unescape(part[at + len(op):])
        terms.append((path, "!=" if op == "!=" else "=", value))
    return terms


def field_value(obj: dict, path: str) -> str:
    value = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
