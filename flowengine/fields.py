"""Field declarations (``{type: integer, min: 0}``) → JSON Schema. (Interim; superseded by models.)"""

from __future__ import annotations

from typing import Any, Mapping

E164 = r"^\+[1-9][0-9]{6,14}$"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

BASE = {
    "text": {"type": "string"},
    "email": {"type": "string", "pattern": EMAIL, "maxLength": 254},
    "phone": {"type": "string", "pattern": E164},
    "integer": {"type": "integer"},
    "decimal": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "list": {"type": "array"},
    "object": {"type": "object"},
}


def field_schema(spec: Mapping[str, Any]) -> dict[str, Any]:
    schema = dict(BASE[spec["type"]])
    for key, target in (("min", "minimum"), ("max", "maximum"), ("pattern", "pattern"), ("enum", "enum"), ("description", "description")):
        if key in spec:
            schema[target] = spec[key]
    return schema
