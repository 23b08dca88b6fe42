"""What a call achieved: the outcomes the LLM may record, its tool, and the post-call summary.

The allowed outcomes and the summary prompt are settings (`CALL_OUTCOMES`, `SUMMARY_PROMPT`);
these are their defaults.
"""

import asyncio
import json

from google import genai
from google.genai import types
from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pydantic import Field

from outcall.request_body import RequestBody

SUMMARY_TIMEOUT_SECS = 20

DEFAULT_OUTCOMES = [
    "interested",
    "not_interested",
    "callback_requested",
    "do_not_call",
    "wrong_number",
    "voicemail",
    "other",
]

DEFAULT_SUMMARY_PROMPT = (
    "You read the transcript of an outbound phone call placed by an AI agent. "
    "Write a two-sentence summary of what happened for the agent's team. "
    "If no outcome was recorded during the call, choose the one that fits best."
)


class RecordedOutcome(RequestBody):
    """The outcome of a call, as the LLM recorded it."""

    outcome: str = Field(max_length=32)
    notes: str = Field(default="", max_length=2000)
    callback_time: str | None = Field(default=None, max_length=64)


def record_outcome_tool(outcomes: list[str]) -> FunctionSchema:
    return FunctionSchema(
        name="record_outcome",
        description=(
            "Record the outcome of this call as soon as it is clear, then carry on the conversation. "
            "Call it again if the outcome changes."
        ),
        properties={
            "outcome": {"type": "string", "enum": outcomes, "description": "What the call achieved."},
            "notes": {"type": "string", "description": "Anything the team should know, in a sentence."},
            "callback_time": {
                "type": "string",
                "description": (
                    "For callback_requested: when to call back, in the person's local time, as an ISO 8601 "
                    "date and time such as 2026-05-04T15:30:00. The call is placed then, within calling hours."
                ),
            },
        },
        required=["outcome"],
    )


async def summarise_call(
    client: genai.Client, model: str, prompt: str, outcomes: list[str], transcript_text: str, need_outcome: bool
) -> tuple[str | None, RecordedOutcome | None]:
    """One LLM request after the call: a summary, and the outcome when none was recorded."""
    schema = {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "outcome": {"type": "string", "enum": outcomes},
            "notes": {"type": "string"},
            "callback_time": {"type": "string"},
        },
        "required": ["summary", "outcome"] if need_outcome else ["summary"],
    }
    try:
        async with asyncio.timeout(SUMMARY_TIMEOUT_SECS):  # the final report waits for this
            response = await client.aio.models.generate_content(
                model=model,
                contents=f"Transcript:\n{transcript_text}",
                config=types.GenerateContentConfig(
                    system_instruction=prompt,
                    response_mime_type="application/json",
                    response_json_schema=schema,
                    temperature=0,
                ),
            )
        data = json.loads(response.text or "{}")
    except Exception as e:
        logger.warning(f"Post-call summary failed: {type(e).__name__}: {e}")
        return None, None
    outcome = None
    if need_outcome and data.get("outcome") in outcomes:
        outcome = RecordedOutcome(
            outcome=data["outcome"], notes=data.get("notes") or "", callback_time=data.get("callback_time") or None
        )
    return data.get("summary") or None, outcome
