"""The three patch formats: JSON merge, JSON patch and strategic merge.

* ``merge_patch`` is RFC 7386: objects merge key by key, ``null`` deletes,
  anything else (lists included) replaces.
* ``json_patch`` is RFC 6902 (add, remove, replace, move, copy, test) over
  RFC 6901 pointers; a failed operation raises ``PatchError`` (the server
  answers 422, as the real one does), a malformed document ``ValueError``
  (400).
* ``strategic_merge_patch`` is a merge patch in which the lists that the
  built-in types declare with a patch merge key merge element by element on
  that key (``MERGE_KEYS``), and ``$patch: replace|delete`` directives are
  honoured. Lists not in the table replace, as in a merge patch. Custom
  resources never take strategic merge; the HTTP layer refuses it for them.
"""

from __future__ import annotations

import copy


class PatchError(Exception):
    pass


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# (path of the list, with [] for "each element of") -> the merge key, for the
# built-in kinds this server serves; from the patchMergeKey tags in k8s.io/api.
MERGE_KEYS = {
    "metadata.ownerReferences": "uid",
    "spec.ports": "port",  # Service
    "status.conditions": "type",
    "status.loadBalancer.ingress": None,  # atomic
    "subsets": None,  # Endpoints: atomic
}


def strategic_merge_patch(target, patch, path: str = ""):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "replace":
        return copy.deepcopy(patch)
    if directive == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        sub = f"{path}.{k}" if path else k
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and MERGE_KEYS.get(sub) and isinstance(out.get(k), list):
            out[k] = _merge_list(out[k], v, MERGE_KEYS[sub], sub)
        elif isinstance(v, list):
            out[k] = [_strip(item) for item in v if not _is_delete(item)]
        else:
            merged = strategic_merge_patch(out.get(k), v, sub)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
    return out


def _is_delete(item) -> bool:
    return isinstance(item, dict) and item.get("$patch") == "delete"


def _strip(item):
    if isinstance(item, dict):
        return {k: _strip(v) for k, v in item.items() if not k.startswith("$")}
    return copy.deepcopy(item)


def _merge_list(current: list, patch: list, key: str, path: str) -> list:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    out = list(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            out.append(_strip(item))
            continue
        at = next((i for i, cur in enumerate(out)
                   if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        if _is_delete(item):
            if at is not None:
                del out[at]
        elif at is None:
            out.append(_strip(item))
        else:
            out[at] = strategic_merge_patch(out[at], item, path)
    return out


# -- RFC 6902 -------------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    if i > len(container) or (i == len(container) and not allow_end):
        raise PatchError(f"array index {i} out of bounds")
    return i


def _parent(doc, parts: list[str]):
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, False)]
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
    return node


def _get(doc, parts: list[str]):
    if not parts:
        return doc
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, False)]
    raise PatchError(f"doc is missing path: /{'/'.join(parts)}")


def _add(doc, parts: list[str], value):
    if not parts:
        return value
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, True), value)
    else:
        raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
    return doc


def _remove(doc, parts: list[str]):
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key: {last}: missing value")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, False))
    raise PatchError(f"doc is missing path: /{'/'.join(parts)}")


def json_patch(target, ops):
    if not isinstance(ops, list):
        raise ValueError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ValueError(f"invalid JSON patch operation {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise ValueError(f"operation {kind} needs a value")
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _get(doc, parts)
            if not parts:
                doc = copy.deepcopy(op["value"])
            else:
                _remove(doc, parts)
                doc = _add(doc, parts, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = _remove(doc, src) if kind == "move" else copy.deepcopy(_get(doc, src))
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _get(doc, parts) != op["value"]:
                raise PatchError(f"testing value {op['path']} failed: test failed")
        else:
            raise ValueError(f"unexpected kind of operation: {kind}")
    return doc
