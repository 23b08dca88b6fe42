"""The base of every request body: unknown fields, NaN and Infinity are refused with a 422.

A typo such as `"greting"` must be an error that names it, not a call placed with the default
greeting. NaN and Infinity are not JSON, though Python's parser accepts them: a variable of NaN
was once stored as null while the prompt said "nan".
"""

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class RequestBody(BaseModel):
    """A model for what a client sends: strict about fields and numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, data: Any) -> Any:
        where = non_finite_number(data)
        if where is not None:
            raise ValueError(f"{where or 'the body'} is NaN or Infinity, which JSON has no numbers for: send a finite number")
        return data


def non_finite_number(value: Any, path: str = "") -> str | None:
    """Where in `value` (a dotted path) a NaN or infinite float sits, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite_number(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None
