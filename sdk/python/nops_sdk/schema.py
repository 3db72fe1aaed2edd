"""A small JSON Schema validator for capability inputs (standard library only).

The kernel validates invocation inputs against the full JSON Schema (draft 2020-12) before they
reach an agent; the invocation server checks again, for calls that did not come through the
kernel and as a safety net. It supports this subset, and ignores every other keyword:

- ``type`` (a name or a list: object, array, string, integer, number, boolean, null);
- ``enum``, ``const``;
- objects: ``required``, ``properties``, ``additionalProperties`` (false or a schema);
- arrays: ``items`` (one schema), ``minItems``, ``maxItems``;
- strings: ``minLength``, ``maxLength`` (in code points);
- numbers: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``.

Errors name the offending field the way the kernel does: ``body`` for the document,
``body.text``, ``body.items.0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping

_MAX_DEPTH = 64


@dataclass(frozen=True)
class FieldError:
    """One violation: the field's name (``body.x.y``) and why."""

    name: str
    reason: str


def _type_ok(value: Any, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    if t == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True  # an unknown type name constrains nothing here


def _json_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def validate(value: Any, schema: Any, name: str = "body") -> List[FieldError]:
    """Return the violations of value against schema (empty when it is valid)."""
    out: List[FieldError] = []
    _validate(value, schema, name, out, 0)
    return out


def _validate(value: Any, schema: Any, name: str, out: List[FieldError], depth: int) -> None:
    if schema is False:
        out.append(FieldError(name, "no value is allowed here"))
        return
    if not isinstance(schema, Mapping):
        return
    if depth > _MAX_DEPTH:
        out.append(FieldError(name, "nested too deeply"))
        return
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_type_ok(value, x) for x in types if isinstance(x, str)):
            out.append(FieldError(name, "got %s, want %s" % (_json_name(value), " or ".join(str(x) for x in types))))
            return
    if "const" in schema and not _same(value, schema["const"]):
        out.append(FieldError(name, "value must be %s" % (schema["const"],)))
    enum = schema.get("enum")
    if isinstance(enum, list) and not any(_same(value, e) for e in enum):
        out.append(FieldError(name, "value must be one of %s" % (enum,)))
    if isinstance(value, dict):
        props = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
        for req in schema.get("required") or []:
            if isinstance(req, str) and req not in value:
                out.append(FieldError(name + "." + req, 'property "%s" is missing' % req))
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                _validate(v, props[k], name + "." + k, out, depth + 1)
            elif extra is False:
                out.append(FieldError(name + "." + k, 'property "%s" is not allowed' % k))
            elif isinstance(extra, Mapping):
                _validate(v, extra, name + "." + k, out, depth + 1)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping) or isinstance(items, bool):
            for i, v in enumerate(value):
                _validate(v, items, "%s.%d" % (name, i), out, depth + 1)
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        if isinstance(lo, int) and len(value) < lo:
            out.append(FieldError(name, "at least %d items required" % lo))
        if isinstance(hi, int) and len(value) > hi:
            out.append(FieldError(name, "at most %d items allowed" % hi))
    elif isinstance(value, str):
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if isinstance(lo, int) and len(value) < lo:
            out.append(FieldError(name, "at least %d characters required" % lo))
        if isinstance(hi, int) and len(value) > hi:
            out.append(FieldError(name, "at most %d characters allowed" % hi))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        checks = (
            ("minimum", lambda v, b: v >= b, "must be >= %s"),
            ("maximum", lambda v, b: v <= b, "must be <= %s"),
            ("exclusiveMinimum", lambda v, b: v > b, "must be > %s"),
            ("exclusiveMaximum", lambda v, b: v < b, "must be < %s"),
        )
        for kw, ok, msg in checks:
            bound = schema.get(kw)
            if isinstance(bound, (int, float)) and not isinstance(bound, bool) and not ok(value, bound):
                out.append(FieldError(name, msg % bound))
