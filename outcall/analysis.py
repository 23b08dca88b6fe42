"""Post-call analysis: fields the user defines, filled from each conversation.

The single post-call LLM request (pipelines/summary.py) already asks for a summary as JSON
following a schema; the fields join that schema, each with its type and the user's description,
so analysis costs no extra request. What comes back is checked against the fields here: a value
of the wrong type, outside an enum's options or missing is left empty, with the reason, never
stored as the model wrote it. The fields are a setting (`ANALYSIS_FIELDS`, JSON); by default
the callee's sentiment.

Plain values and pydantic only: the settings, the bot and the server all import it.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from outcall.request_body import RequestBody

FieldType = Literal["boolean", "number", "string", "enum", "datetime"]
MAX_STRING_CHARS = 2000
AnalysisValue = bool | float | str | None


class AnalysisField(RequestBody):
    """One thing to extract from every conversation."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="lower_snake_case, ≤ 40 characters")
    type: FieldType
    description: str = Field(min_length=1, max_length=500, description="what the model is to look for")
    options: list[str] = Field(default_factory=list, max_length=50, description="the values an enum may take")

    @model_validator(mode="after")
    def _options_for_enums_only(self) -> "AnalysisField":
        if self.type == "enum" and len(set(self.options)) < 2:
            raise ValueError(f"field {self.name!r}: an enum needs at least two different options")
        if self.type != "enum" and self.options:
            raise ValueError(f"field {self.name!r}: only an enum has options")
        return self


DEFAULT_ANALYSIS_FIELDS = [
    AnalysisField(
        name="sentiment", type="enum", options=["positive", "neutral", "negative"],
        description="The callee's overall sentiment during the call",
    ),
]


def unique_names(fields: list[AnalysisField]) -> list[AnalysisField]:
    """Raise ValueError if two fields share a name."""
    names = [f.name for f in fields]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"analysis field names must be unique: {', '.join(repeated)} given twice")
    return fields


def answer_schema(fields: list[AnalysisField]) -> dict[str, Any]:
    """The JSON schema of the `analysis` object the post-call request asks for. No field is
    required: the model leaves out what the conversation does not tell."""
    types = {"boolean": "boolean", "number": "number", "string": "string", "enum": "string", "datetime": "string"}
    properties = {}
    for field in fields:
        prop: dict[str, Any] = {"type": types[field.type], "description": field.description}
        if field.type == "enum":
            prop["enum"] = list(field.options)
        elif field.type == "datetime":
            prop["description"] += " (an ISO 8601 date-time, like 2027-03-01T17:00:00Z)"
        properties[field.name] = prop
    return {"type": "object", "properties": properties}


def read_answer(fields: list[AnalysisField], answer: Any) -> tuple[dict[str, AnalysisValue], dict[str, str]]:
    """The model's `analysis` object checked against `fields`: (values, reasons), every field in
    `values` (None when empty) and a reason for each empty one."""
    if not isinstance(answer, dict):
        return failed(fields, "the model gave no analysis object")
    values: dict[str, AnalysisValue] = {}
    reasons: dict[str, str] = {}
    for field in fields:
        value, reason = _check(field, answer.get(field.name))
        values[field.name] = value
        if reason:
            reasons[field.name] = reason
    return values, reasons


def failed(fields: list[AnalysisField], reason: str) -> tuple[dict[str, AnalysisValue], dict[str, str]]:
    """Every field empty, for one reason (the request failed, the answer was not JSON…)."""
    return {f.name: None for f in fields}, {f.name: reason for f in fields}


def _check(field: AnalysisField, value: Any) -> tuple[AnalysisValue, str | None]:
    if value is None:
        return None, "the model did not fill it"
    if field.type == "boolean":
        return (value, None) if isinstance(value, bool) else (None, f"expected true or false, got {_shown(value)}")
    if field.type == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value), None
        return None, f"expected a number, got {_shown(value)}"
    if not isinstance(value, str):
        return None, f"expected text, got {_shown(value)}"
    if field.type == "enum":
        return (value, None) if value in field.options else (None, f"{_shown(value)} is not one of {', '.join(field.options)}")
    if field.type == "datetime":
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat(), None
        except ValueError:
            return None, f"expected an ISO 8601 date-time, got {_shown(value)}"
    return value[:MAX_STRING_CHARS], None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"
