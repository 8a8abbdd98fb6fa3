"""A flow's declared inputs, validated per request with the same models as stored data.

``inputs.query``, ``inputs.path`` and ``inputs.headers`` declare fields, read from the URL
as text and converted to the declared type first; ``inputs.body`` declares fields or names
a model. Each part is a transient model compiled when the app loads (``spec/app.py``), so a
request is checked exactly like an object a flow would store: one error item per bad field,
and the flow never starts on bad input. Undeclared query parameters and headers pass through
untouched; a body may hold only its declared fields.
"""

from __future__ import annotations

from typing import Any, Mapping

from flowengine.errors import ValidationFailed
from flowengine.models import Model
from flowengine.spec.app import field_name

URL_PARTS = ("path", "query", "headers")
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _convert(kind: str, text: Any) -> Any:
    """URL text → the declared type; left as text when it does not convert (validation says why)."""
    if not isinstance(text, str):
        return text
    try:
        if kind == "integer":
            return int(text)
        if kind == "decimal":
            return float(text)
    except ValueError:
        return text
    if kind == "boolean":
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    return text


class Inputs:
    """Validates and converts one request's params for one flow."""

    def __init__(self, models: Mapping[str, Model]) -> None:
        self.models = dict(models)

    def validate(self, params: dict[str, Any]) -> None:
        """Convert and check ``params`` in place; raise ``ValidationFailed`` listing each bad field."""
        items: list[dict[str, Any]] = []
        for part, model in self.models.items():
            try:
                if part in URL_PARTS:
                    params[part] = self._url_part(model, params.get(part) or {})
                else:
                    body = params.get(part)
                    params[part] = model.validate_input({} if body is None else body)
            except ValidationFailed as exc:
                items.extend(_prefixed(item, part) for item in exc.items)
        if items:
            raise ValidationFailed(items)

    @staticmethod
    def _url_part(model: Model, given: Mapping[str, Any]) -> dict[str, Any]:
        # Header fields are declared as x_request_id for X-Request-Id (see spec/app.py).
        keys = {field_name(key): key for key in given} if model.noun == "header" else {k: k for k in given}
        declared = {name: _convert(f.type, given[keys[name]]) for name, f in model.fields.items() if name in keys}
        checked = model.validate_input(declared)
        return {**given, **{keys[name]: value for name, value in checked.items()}}

    def schema_of(self, part: str) -> dict[str, Any] | None:
        model = self.models.get(part)
        return model.json_schema() if model is not None else None


def _prefixed(item: dict[str, Any], part: str) -> dict[str, Any]:
    details = {key: value for key, value in (item.get("details") or {}).items() if key != "model"}
    field = details.get("field")
    details["field"] = f"{part}.{field}" if field else part
    return {**item, "details": details}
