"""Post-call analysis fields (outcall/analysis.py): asked for in the one post-call request, checked
against their types, stored with the reason for every empty one, filterable, exported, shown."""

import csv
import io

import pytest
from pydantic import ValidationError

from outcall.settings import Settings
from tests.conftest import CALLEE_NUMBER, conversation
from tests.test_console import signed_in

FIELDS = [
    {"name": "sentiment", "type": "enum", "options": ["positive", "neutral", "negative"], "description": "How the callee felt"},
    {"name": "wants_callback", "type": "boolean", "description": "Whether they asked to be called back"},
    {"name": "visits", "type": "number", "description": "How many visits they mentioned"},
    {"name": "best_time", "type": "datetime", "description": "When they said to call"},
    {"name": "concern", "type": "string", "description": "Their main concern, in a few words"},
]


@pytest.fixture
def server_overrides():
    return {"analysis_fields": FIELDS}


async def analysed_call(vendors, server, answer) -> dict:
    """A call in which the callee speaks once and hangs up, the summary model answering `answer`."""
    vendors.gemini.summarise = lambda request: answer
    vendors.twilio.callee = conversation("yes_this_is_ada", hang_up=True)
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    return await server.record(response.json()["call_id"], until=lambda r: r["end_reason"] and r["analysis"], timeout=30)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)  # JSON paths differ
async def test_the_fields_are_asked_for_in_the_one_summary_request_and_stored_when_valid(vendors, server):
    record = await analysed_call(vendors, server, {
        "summary": "Ada wants a call back.", "outcome": "callback_requested",
        "analysis": {"sentiment": "negative", "wants_callback": True, "visits": 2, "best_time": "2027-03-01T17:00:00Z",
                     "concern": "=HYPERLINK(\"x\")"},
    })
    [request] = vendors.gemini.summary_requests
    schema = request["generationConfig"]["responseJsonSchema"]["properties"]["analysis"]["properties"]
    assert schema["sentiment"] == {"type": "string", "enum": ["positive", "neutral", "negative"], "description": "How the callee felt"}
    assert schema["wants_callback"]["type"] == "boolean" and schema["visits"]["type"] == "number"
    assert "ISO 8601" in schema["best_time"]["description"]
    assert record["analysis"] == {"sentiment": "negative", "wants_callback": True, "visits": 2.0,
                                  "best_time": "2027-03-01T17:00:00+00:00", "concern": '=HYPERLINK("x")'}
    assert record["analysis_errors"] == {} and record["summary"] == "Ada wants a call back."

    # Filterable by any field's value, of any type; a field or value the server does not have is a 400.
    for query, found in [("sentiment:negative", True), ("sentiment:positive", False), ("wants_callback:true", True),
                         ("wants_callback:false", False), ("visits:2", True), ("concern:=HYPERLINK(\"x\")", True)]:
        calls = (await server.get("/calls", analysis=query)).json()["calls"]
        assert [c["id"] for c in calls] == ([record["id"]] if found else []), query
    for bad, words in [("mood:happy", "one of the fields sentiment"), ("sentiment:furious", "one of positive"),
                       ("wants_callback:yes", "true or false"), ("visits:two", "a number"), ("sentiment", "field:value")]:
        response = await server.get("/calls", analysis=bad)
        assert response.status_code == 400 and words in response.json()["detail"], bad

    # A column each in the export (a formula-like value defused), and on the call's console page.
    rows = list(csv.DictReader(io.StringIO((await server.get("/calls/export")).text)))
    assert (rows[0]["analysis.sentiment"], rows[0]["analysis.wants_callback"], rows[0]["analysis.visits"]) == ("negative", "true", "2.0")
    assert rows[0]["analysis.concern"] == "'=HYPERLINK(\"x\")"
    async with signed_in(server) as (client, _):
        page = (await client.get(f"/console/calls/{record['id']}")).text
        assert "<dt>wants_callback</dt><dd>true</dd>" in page and "<dt>sentiment</dt><dd>negative</dd>" in page


async def test_values_the_model_got_wrong_stay_empty_with_the_reason(vendors, server):
    record = await analysed_call(vendors, server, {
        "summary": "They talked.", "outcome": "other",
        "analysis": {"sentiment": "furious", "wants_callback": "yes", "visits": "two", "best_time": "next Tuesday"},
    })
    assert record["analysis"] == {name["name"]: None for name in FIELDS}
    errors = record["analysis_errors"]
    assert errors["sentiment"] == "'furious' is not one of positive, neutral, negative"
    assert errors["wants_callback"] == "expected true or false, got 'yes'"
    assert errors["visits"] == "expected a number, got 'two'"
    assert errors["best_time"] == "expected an ISO 8601 date-time, got 'next Tuesday'"
    assert errors["concern"] == "the model did not fill it"
    assert record["summary"] == "They talked."  # the rest of the answer still counts


async def test_an_answer_that_is_not_json_leaves_every_field_empty_and_says_why(vendors, server):
    record = await analysed_call(vendors, server, "Sure! Here is the summary: they talked.")
    assert record["analysis"] == {f["name"]: None for f in FIELDS} and record["summary"] is None
    assert set(record["analysis_errors"].values()) == {"the post-call request failed (JSONDecodeError)"}
    assert record["end_reason"] == "callee-hung-up"


def test_analysis_fields_are_checked_when_the_server_starts():
    def settings(fields):
        return Settings(_env_file=None, analysis_fields=fields)

    assert [f.name for f in Settings(_env_file=None).analysis_fields] == ["sentiment"]  # the default
    for fields, words in [
        ([{"name": "mood", "type": "enum", "options": ["ok"], "description": "x"}], "at least two"),
        ([{"name": "mood", "type": "string", "options": ["a", "b"], "description": "x"}], "only an enum"),
        ([{"name": "Mood", "type": "string", "description": "x"}], "pattern"),
        ([{"name": "mood", "type": "colour", "description": "x"}], "boolean"),
        ([{"name": "m", "type": "string", "description": "x"}] * 2, "unique"),
        ([{"name": "m", "type": "string", "description": "x", "extra": 1}], "Extra inputs"),
    ]:
        with pytest.raises(ValidationError, match=words):
            settings(fields)
