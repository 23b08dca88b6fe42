"""Calls on an OpenAI-compatible LLM (LLM_PROVIDER=openai): Pipecat's OpenAI service against the
chat-completions fake (tests/fakes/openai.py), with the same tools, prompt and post-call summary."""

import json

import pytest

from outcall.settings import Settings
from tests.conftest import CALLEE_NUMBER, conversation, polite_llm
from tests.fakes.gemini import last_user_text, system_text
from tests.fakes.openai import FakeOpenAI

OPENAI_KEY = "openai-test-key"


@pytest.fixture
async def openai_llm():
    fake = await FakeOpenAI(OPENAI_KEY, polite_llm).start()
    yield fake
    await fake.stop()


@pytest.fixture
def server_overrides(openai_llm):
    return {"llm_provider": "openai", "openai_base_url": openai_llm.base_url, "openai_api_key": OPENAI_KEY,
            "openai_model": "local-model"}


async def test_a_call_on_an_openai_compatible_llm_from_dialout_to_hangup(vendors, server, openai_llm):
    vendors.twilio.callee = conversation("yes_this_is_ada", "thanks_goodbye")
    vendors.deepgram.transcripts = ["yes this is ada", "okay thank you goodbye"]
    response = await server.dialout({"to_number": CALLEE_NUMBER, "variables": {"name": "Ada"}})
    assert response.status_code == 200, response.text
    record = await server.record(response.json()["call_id"], until=lambda r: r["end_reason"] and r["summary"], timeout=30)

    # The conversation went to the OpenAI-compatible server, never to Gemini.
    assert vendors.gemini.requests == [] and vendors.gemini.summary_requests == []
    first = openai_llm.requests[0]
    assert first["model"] == "local-model" and first["stream"] is True
    assert "yes this is ada" in last_user_text(first) and "- name: Ada" in system_text(first)
    assert {tool["function"]["name"] for tool in first["tools"]} >= {"end_call", "record_outcome", "press_keys"}
    outcomes = next(t for t in first["tools"] if t["function"]["name"] == "record_outcome")["function"]["parameters"]
    assert "do_not_call" in outcomes["properties"]["outcome"]["enum"]

    # The LLM's end_call tool ended the call after its goodbye was spoken.
    assert record["end_reason"] == "bot-ended"
    assert vendors.cartesia.spoken_text().endswith("Thank you for your time. Goodbye!")
    assert [t["speaker"] for t in record["transcript"]] == ["bot", "callee", "bot", "callee", "bot"]

    # The post-call summary asked the same server for JSON following the schema.
    [summary] = openai_llm.summary_requests
    assert summary["model"] == "local-model" and summary["response_format"]["type"] == "json_schema"
    assert "okay thank you goodbye" in summary["messages"][-1]["content"]
    assert record["summary"] == "The callee spoke with the agent." and record["outcome"] == "other"


async def test_tool_results_go_back_to_the_openai_compatible_llm(vendors, server, openai_llm):
    def llm(request: dict) -> list[dict]:
        if request["messages"][-1]["role"] == "tool":  # the outcome was recorded: carry on
            return [{"text": "Thanks, I have noted that. Goodbye!"},
                    {"functionCall": {"name": "end_call", "args": {"reason": "done"}}}]
        return [{"functionCall": {"name": "record_outcome",
                                  "args": {"outcome": "callback_requested", "callback_time": "tomorrow 5pm"}}}]

    openai_llm.respond = llm
    vendors.twilio.callee = conversation("yes_this_is_ada")
    vendors.deepgram.transcripts = ["call me back tomorrow at five"]
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    record = await server.record(response.json()["call_id"], until=lambda r: r["end_reason"] and r["summary"], timeout=30)

    assert (record["outcome"], record["callback_time"]) == ("callback_requested", "tomorrow 5pm")
    follow_up = openai_llm.requests[-1]
    call_message = next(m for m in follow_up["messages"] if m.get("tool_calls"))
    result = follow_up["messages"][-1]
    assert result["tool_call_id"] == call_message["tool_calls"][0]["id"]
    assert json.loads(result["content"]) == {"recorded": "callback_requested"}
    assert record["end_reason"] == "bot-ended"
    # Asked only for the summary: the outcome was already recorded.
    assert "outcome" not in openai_llm.summary_requests[0]["response_format"]["json_schema"]["schema"]["required"]


def test_the_settings_say_when_the_openai_llm_has_no_key():
    def missing(**values) -> set[str]:
        return {names for names, _ in Settings(_env_file=None, llm_provider="openai", **values).missing_settings()}

    assert "OPENAI_API_KEY" in missing() and "GOOGLE_API_KEY" not in missing()
    assert "OPENAI_API_KEY" not in missing(openai_api_key="sk-x")
    assert "OPENAI_API_KEY" not in missing(openai_base_url="http://localhost:8000/v1")  # a self-hosted server
