"""The post-call summary: one LLM request after the conversation, for a two-sentence summary and,
when the LLM recorded none during the call, the outcome. Its prompt is a setting (`SUMMARY_PROMPT`).
It asks the call's own LLM (Gemini, or the OpenAI-compatible endpoint) for JSON that follows a
schema, in each API's own structured-output form."""

import asyncio
import json

from google import genai
from google.genai import types
from loguru import logger

from outcall.reports import RecordedOutcome
from outcall.settings import Settings
from pipelines.default import google_http_options, openai_api_key

SUMMARY_TIMEOUT_SECS = 20

DEFAULT_SUMMARY_PROMPT = (
    "You read the transcript of an outbound phone call placed by an AI agent. "
    "Write a two-sentence summary of what happened for the agent's team. "
    "If no outcome was recorded during the call, choose the one that fits best."
)


def can_summarise(settings: Settings) -> bool:
    """Whether the LLM is configured to be asked."""
    if settings.llm_provider == "openai":
        return bool(settings.secret("openai_api_key") or settings.openai_base_url)
    return bool(settings.secret("google_api_key"))


async def ask_for_json(settings: Settings, instruction: str, text: str, schema: dict) -> dict:
    """The configured LLM's answer to `text`, as a JSON object following `schema`."""
    if settings.llm_provider == "openai":
        from openai import AsyncOpenAI  # only when used, as in pipelines/default.py

        async with AsyncOpenAI(api_key=openai_api_key(settings), base_url=settings.openai_base_url) as client:
            response = await client.chat.completions.create(
                model=settings.openai_model,
                messages=[{"role": "system", "content": instruction}, {"role": "user", "content": text}],
                response_format={"type": "json_schema", "json_schema": {"name": "call_summary", "schema": schema}},
                temperature=0,
            )
        return json.loads(response.choices[0].message.content or "{}")
    client = genai.Client(api_key=settings.secret("google_api_key"), http_options=google_http_options(settings))
    response = await client.aio.models.generate_content(
        model=settings.google_model,
        contents=text,
        config=types.GenerateContentConfig(
            system_instruction=instruction,
            response_mime_type="application/json",
            response_json_schema=schema,
            temperature=0,
        ),
    )
    return json.loads(response.text or "{}")


async def summarise_call(
    settings: Settings, prompt: str, outcomes: list[str], transcript_text: str, need_outcome: bool
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
            data = await ask_for_json(settings, prompt, f"Transcript:\n{transcript_text}", schema)
    except Exception as e:
        logger.warning(f"Post-call summary failed: {type(e).__name__}: {e}")
        return None, None
    outcome = None
    if need_outcome and data.get("outcome") in outcomes:
        outcome = RecordedOutcome(
            outcome=data["outcome"], notes=data.get("notes") or "", callback_time=data.get("callback_time") or None
        )
    return data.get("summary") or None, outcome
