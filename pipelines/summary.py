"""The post-call summary: one LLM request after the conversation, for a two-sentence summary,
the outcome when the LLM recorded none during the call, and the analysis fields the user
defined (outcall/analysis.py). Its prompt is a setting (`SUMMARY_PROMPT`). It asks the call's
own LLM (Gemini, or the OpenAI-compatible endpoint) for JSON that follows a schema, in each
API's own structured-output form."""

import asyncio
import json
from dataclasses import dataclass, field

from google import genai
from google.genai import types
from loguru import logger

from outcall.analysis import AnalysisField, AnalysisValue, answer_schema, failed, read_answer
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


@dataclass
class PostCallAnswer:
    """What the post-call request found: the summary, the outcome (when none was recorded), and
    the analysis fields' values with the reason for each empty one."""

    summary: str | None = None
    outcome: RecordedOutcome | None = None
    analysis: dict[str, AnalysisValue] = field(default_factory=dict)
    analysis_errors: dict[str, str] = field(default_factory=dict)


async def summarise_call(
    settings: Settings, prompt: str, outcomes: list[str], transcript_text: str, need_outcome: bool,
    analysis_fields: list[AnalysisField],
) -> PostCallAnswer:
    """One LLM request after the call: a summary, the outcome when none was recorded, and the
    analysis fields."""
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
    if analysis_fields:
        schema["properties"]["analysis"] = answer_schema(analysis_fields)
        schema["required"].append("analysis")
    try:
        async with asyncio.timeout(SUMMARY_TIMEOUT_SECS):  # the final report waits for this
            data = await ask_for_json(settings, prompt, f"Transcript:\n{transcript_text}", schema)
        if not isinstance(data, dict):
            raise ValueError("the answer is not a JSON object")
    except Exception as e:
        logger.warning(f"Post-call summary failed: {type(e).__name__}: {e}")
        values, reasons = failed(analysis_fields, f"the post-call request failed ({type(e).__name__})")
        return PostCallAnswer(analysis=values, analysis_errors=reasons)
    answer = PostCallAnswer(summary=data.get("summary") if isinstance(data.get("summary"), str) else None)
    if need_outcome and data.get("outcome") in outcomes:
        answer.outcome = RecordedOutcome(
            outcome=data["outcome"], notes=str(data.get("notes") or "")[:2000],
            callback_time=str(data["callback_time"])[:64] if data.get("callback_time") else None,
        )
    answer.analysis, answer.analysis_errors = read_answer(analysis_fields, data.get("analysis"))
    return answer
