"""Structural schemas of custom resources: prune, default, validate.

The apiextensions server runs, on every write of a custom resource, the same
three passes in this order, and so does this module:

1. prune: drop fields the schema does not name, unless a node says
   ``x-kubernetes-preserve-unknown-fields`` (or is int-or-string or an embedded
   resource); ``apiVersion``, ``kind`` and ``metadata`` at the root stay;
2. default: set ``default`` for absent properties, top down, so defaults inside
   a defaulted value apply too; a ``null`` in a non-nullable field is dropped
   first (and then defaulted if it has a default);
3. validate: a subset of OpenAPI v3 (type, nullable, enum, required, lengths,
   pattern, bounds, item and property counts, allOf/anyOf/oneOf/not). The
   errors are (reason, field path, message) like field.Error.

Not modelled: CEL rules (``x-kubernetes-validations``), ``format``, list-type
uniqueness (``x-kubernetes-list-type: set|map``), ``fieldValidation=Strict``.
"""

from __future__ import annotations

import copy
import json
import re

_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def prune(obj: dict, schema: dict | None) -> dict:
    if not schema:
        return obj
    out = {k: obj[k] for k in _ROOT_KEEP if k in obj}
    rest = {k: v for k, v in obj.items() if k not in _ROOT_KEEP}
    out.update(_prune(rest, schema))
    return out


def _keeps_unknown(schema: dict) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields")
                or schema.get("x-kubernetes-int-or-string")
                or schema.get("x-kubernetes-embedded-resource"))


def _prune(value, schema: dict):
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for k, v in value.items():
            if props and k in props:
                out[k] = _prune(v, props[k])
            elif isinstance(extra, dict):
                out[k] = _prune(v, extra)
            elif extra is True or _keeps_unknown(schema):
                out[k] = v
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(v, schema["items"]) for v in value]
    return value


def default(obj: dict, schema: dict | None) -> dict:
    if schema:
        props = {k: v for k, v in (schema.get("properties") or {}).items() if k != "metadata"}
        _default(obj, dict(schema, properties=props))
    return obj


def _default(value, schema: dict) -> None:
    if isinstance(value, dict):
        for k, sub in (schema.get("properties") or {}).items():
            if value.get(k, 0) is None and not sub.get("nullable"):
                del value[k]
            if k not in value and "default" in sub:
                value[k] = copy.deepcopy(sub["default"])
            if k in value:
                _default(value[k], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for v in value.values():
                _default(v, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for v in value:
            _default(v, schema["items"])


def validate(obj: dict, schema: dict | None) -> list[tuple[str, str, str]]:
    if not schema:
        return []
    errors: list[tuple[str, str, str]] = []
    rest = {k: v for k, v in obj.items() if k not in _ROOT_KEEP}
    sub_schema = dict(schema)
    sub_schema["properties"] = {k: v for k, v in (schema.get("properties") or {}).items()
                                if k not in _ROOT_KEEP}
    sub_schema["required"] = [r for r in schema.get("required") or [] if r not in _ROOT_KEEP]
    _validate(rest, sub_schema, "", errors)
    return errors


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _type_ok(value, schema: dict) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    kind = schema.get("type")
    if kind is None:
        return True
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES.get(kind, object))


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _validate(value, schema: dict, path: str, errors: list) -> None:
    here = path or "<root>"
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            errors.append(("FieldValueTypeInvalid", here,
                           f'Invalid value: "null": {here} in body must be of type '
                           f'{schema["type"]}: "null"'))
        return
    if not _type_ok(value, schema):
        got = type(value).__name__
        errors.append(("FieldValueTypeInvalid", here,
                       f"Invalid value: {_show(value)}: {here} in body must be of type "
                       f'{schema.get("type", "integer or string")}: "{got}"'))
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_show(v) for v in schema["enum"])
        errors.append(("FieldValueNotSupported", here,
                       f"Unsupported value: {_show(value)}: supported values: {allowed}"))
    if isinstance(value, str):
        _validate_string(value, schema, here, errors)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _validate_number(value, schema, here, errors)
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(("FieldValueTooMany", here,
                           f"Too many: {len(value)}: must have at most {schema['maxItems']} items"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(("FieldValueInvalid", here,
                           f"Invalid value: {len(value)}: {here} in body should have at least "
                           f"{schema['minItems']} items"))
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                _validate(item, schema["items"], f"{path}[{i}]", errors)
    elif isinstance(value, dict):
        _validate_object(value, schema, path, errors)
    for sub in schema.get("allOf") or []:
        _validate(value, sub, path, errors)
    if schema.get("anyOf") and not any(_passes(value, s, path) for s in schema["anyOf"]):
        errors.append(("FieldValueInvalid", here, f"Invalid value: {_show(value)}: {here} in "
                       "body must validate at least one schema (anyOf)"))
    if schema.get("oneOf") and sum(_passes(value, s, path) for s in schema["oneOf"]) != 1:
        errors.append(("FieldValueInvalid", here, f"Invalid value: {_show(value)}: {here} in "
                       "body must validate one and only one schema (oneOf)"))
    if isinstance(schema.get("not"), dict) and _passes(value, schema["not"], path):
        errors.append(("FieldValueInvalid", here, f"Invalid value: {_show(value)}: {here} in "
                       "body must not validate the schema (not)"))


def _passes(value, schema: dict, path: str) -> bool:
    errors: list = []
    _validate(value, schema, path, errors)
    return not errors


def _validate_string(value: str, schema: dict, here: str, errors: list) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(("FieldValueTooLong", here,
                       f"Too long: may not be more than {schema['maxLength']} bytes"))
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(("FieldValueInvalid", here,
                       f"Invalid value: {_show(value)}: {here} in body should be at least "
                       f"{schema['minLength']} chars long"))
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(("FieldValueInvalid", here,
                       f"Invalid value: {_show(value)}: {here} in body should match "
                       f"'{schema['pattern']}'"))


def _validate_number(value, schema: dict, here: str, errors: list) -> None:
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") is True and value == low):
            errors.append(("FieldValueInvalid", here,
                           f"Invalid value: {value}: {here} in body should be greater than "
                           f"or equal to {low}"))
    if "maximum" in schema:
        high = schema["maximum"]
        if value > high or (schema.get("exclusiveMaximum") is True and value == high):
            errors.append(("FieldValueInvalid", here,
                           f"Invalid value: {value}: {here} in body should be less than "
                           f"or equal to {high}"))


def _validate_object(value: dict, schema: dict, path: str, errors: list) -> None:
    here = path or "<root>"
    for name in schema.get("required") or []:
        if name not in value:
            field = f"{path}.{name}" if path else name
            errors.append(("FieldValueRequired", field, "Required value"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(("FieldValueTooMany", here,
                       f"Too many: {len(value)}: must have at most {schema['maxProperties']} "
                       "items"))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(("FieldValueInvalid", here,
                       f"Invalid value: {len(value)}: {here} in body should have at least "
                       f"{schema['minProperties']} properties"))
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for k, v in value.items():
        field = f"{path}.{k}" if path else k
        if k in props:
            _validate(v, props[k], field, errors)
        elif isinstance(extra, dict):
            _validate(v, extra, field, errors)
