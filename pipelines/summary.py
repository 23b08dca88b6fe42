"""The post-call summary: one LLM request after the conversation, for a two-sentence summary and,
when the LLM recorded none during the call, the outcome. Its prompt is a setting (`SUMMARY_PROMPT`)."""

import asyncio
import json

from google import genai
from google.genai import types
from loguru import logger

from outcall.reports import RecordedOutcome

SUMMARY_TIMEOUT_SECS = 20

DEFAULT_SUMMARY_PROMPT = (
    "You read the transcript of an outbound phone call placed by an AI agent. "
    "Write a two-sentence summary of what happened for the agent's team. "
    "If no outcome was recorded during the call, choose the one that fits best."
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
