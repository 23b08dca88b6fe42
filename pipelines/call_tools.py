"""The LLM's tools on a call, their schemas in one place: hang up, record the outcome, press
keys and, when the call has somewhere to go, transfer to a person. The handlers are the call
session's (bot.py)."""

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

KEYPAD = set("0123456789*#")

END_CALL = FunctionSchema(
    name="end_call",
    description="Hang up the phone call. Say a short goodbye first, then call this.",
    properties={"reason": {"type": "string", "description": "Why the call is ending, in a few words."}},
    required=[],
)

TRANSFER_CALL = FunctionSchema(
    name="transfer_call",
    description="Transfer the call to a human colleague, when the person asks for one or you cannot help.",
    properties={
        "reason": {"type": "string", "description": "Why the call is being transferred, in a few words."},
        "summary": {"type": "string", "description": "The conversation so far, in one sentence, for the colleague."},
    },
    required=[],
)

PRESS_KEYS = FunctionSchema(
    name="press_keys",
    description="Press keys on the phone keypad, to navigate an automated phone menu.",
    properties={"keys": {"type": "string", "description": "Digits, * and # to press, in order, e.g. '1' or '123#'."}},
    required=["keys"],
)


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


def call_tools(outcomes: list[str], can_transfer: bool) -> ToolsSchema:
    """The tools offered on one call."""
    tools = [END_CALL, record_outcome_tool(outcomes), PRESS_KEYS]
    if can_transfer:
        tools.append(TRANSFER_CALL)
    return ToolsSchema(standard_tools=tools)
