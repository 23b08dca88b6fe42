"""POST /dialout: authentication, validation and Twilio's errors, all through the real server."""

import json

import pytest

from pydantic import ValidationError

from tests.conftest import API_KEY, CALLEE_NUMBER, OUR_NUMBER, free_port, make_settings


async def test_requires_an_api_key(vendors, server):
    assert (await server.dialout({"to_number": CALLEE_NUMBER}, api_key=None)).status_code == 401
    wrong = await server.dialout({"to_number": CALLEE_NUMBER}, api_key="wrong")
    assert wrong.status_code == 401
    assert "X-API-Key" in wrong.json()["detail"]
    bearer = await server.client.post(
        "/dialout", json={"to_number": CALLEE_NUMBER}, headers={"Authorization": "Bearer test-dialout-key"}
    )
    assert bearer.status_code == 200, bearer.text
    assert len(vendors.twilio.calls) == 1  # only the authorised request placed a call


@pytest.mark.parametrize("server_overrides", [{"dialout_api_key": None}])
async def test_without_a_configured_key_dialout_is_closed(vendors, server):
    response = await server.dialout({"to_number": CALLEE_NUMBER}, api_key="anything")
    assert response.status_code == 503
    assert "DIALOUT_API_KEY" in response.json()["detail"]
    assert vendors.twilio.calls == {}


@pytest.mark.parametrize(
    "number, complaint",
    [
        ("4155552671", "E.164"),
        ("+1 415 555 2671", "E.164"),
        ("+1555123", "not a valid phone number"),
        ("+15551234567", "not a valid phone number"),
        ("", "E.164"),
    ],
)
async def test_rejects_numbers_that_are_not_e164(vendors, server, number, complaint):
    response = await server.dialout({"to_number": number})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "to_number"]
    assert complaint in error["msg"] and "+14155552671" in error["msg"]
    assert vendors.twilio.calls == {}


async def test_rejects_a_bad_from_number_and_bad_variables(vendors, server):
    response = await server.dialout({"to_number": CALLEE_NUMBER, "from_number": "12345"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "from_number"]
    nested = await server.dialout({"to_number": CALLEE_NUMBER, "variables": {"name": {"first": "Ada"}}})
    assert nested.status_code == 422
    bad_name = await server.dialout({"to_number": CALLEE_NUMBER, "variables": {"first name": "Ada"}})
    assert bad_name.status_code == 422 and "identifiers" in str(bad_name.json())
    assert vendors.twilio.calls == {}


async def test_a_placeholder_without_a_value_is_rejected_before_dialing(vendors, server):
    response = await server.dialout(
        {"to_number": CALLEE_NUMBER, "variables": {"name": "Ada"}, "greeting": "Hi {name}, about {amount} due {due_date}"}
    )
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "greeting"]
    assert "amount, due_date" in error["msg"]
    malformed = await server.dialout({"to_number": CALLEE_NUMBER, "prompt": "You are {name!r} {"})
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["loc"] == ["body", "prompt"]
    assert vendors.twilio.calls == {}


async def test_from_number_defaults_to_the_configured_number(vendors, server):
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    assert response.json()["from_number"] == OUR_NUMBER
    assert vendors.twilio.only_call().from_ == OUR_NUMBER


async def test_twilio_refusal_comes_back_as_clear_json(vendors, server):
    response = await server.dialout({"to_number": CALLEE_NUMBER, "from_number": "+14155550199"})
    assert response.status_code == 400
    body = response.json()
    assert body["twilio_code"] == 21210
    assert "not yet verified" in body["detail"]
    assert body["more_info"].endswith("/21210")
    assert "Traceback" not in response.text


@pytest.mark.parametrize("server_overrides", [{"twilio_auth_token": "not-the-real-token"}])
async def test_bad_twilio_credentials_are_an_upstream_error(vendors, server):
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    assert response.status_code == 502
    assert response.json()["twilio_code"] == 20003
    assert "credentials" in response.json()["detail"]


@pytest.mark.parametrize("server_overrides", [{"twilio_api_base_url": "http://127.0.0.1:9"}])
async def test_unreachable_twilio_is_a_502_with_no_call(vendors, server):
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    assert response.status_code == 502
    assert "unreachable" in response.json()["detail"]


@pytest.mark.parametrize("server_overrides", [{"stream_secret": None}])
async def test_calling_without_stream_secret_is_refused(vendors, server):
    response = await server.dialout({"to_number": CALLEE_NUMBER})
    assert response.status_code == 503
    assert "STREAM_SECRET" in response.json()["detail"]
    assert vendors.twilio.calls == {}


async def test_health(server):
    assert (await server.client.get("/health")).json() == {"status": "ok"}


@pytest.mark.parametrize(
    "body, where",
    [
        ({"to_number": CALLEE_NUMBER, "greting": "Hi"}, "greting"),  # a typo is not the default greeting
        ({"to_number": CALLEE_NUMBER, "variables": {"score": float("nan")}}, "variables.score"),
        ({"to_number": CALLEE_NUMBER, "metadata": {"deep": [1, float("inf")]}}, "metadata.deep.1"),
    ],
)
async def test_unknown_fields_and_non_json_numbers_are_refused(vendors, server, body, where):
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    response = await server.client.post("/dialout", content=json.dumps(body), headers=headers)  # NaN written as NaN
    assert response.status_code == 422, response.text
    assert where in str(response.json()["detail"])
    assert vendors.twilio.calls == {}


async def test_campaign_settings_refuse_unknown_fields_at_every_level(server):
    for settings in ({"timezone": "UTC", "greting": "Hi"}, {"timezone": "UTC", "retry": {"no_answer": {"max_attempts": 2, "delay_secs": 60, "dealy": 1}}}):
        response = await server.post("/campaigns", {"name": "typo", "settings": settings})
        assert response.status_code == 422, response.text
        assert "greting" in response.text or "dealy" in response.text
    assert (await server.get("/campaigns")).json()["campaigns"] == []


@pytest.mark.parametrize("setting", ["transfer_number", "twilio_phone_number"])
async def test_number_settings_are_validated_at_startup_like_per_call_values(vendors, setting):
    with pytest.raises(ValidationError, match="E.164"):
        make_settings(vendors, free_port(), **{setting: "415 555 2671"})


@pytest.mark.parametrize(
    "script, field, complaint",
    [
        ({"variables": {"first name": "Ada"}}, "variables", "identifiers"),
        ({"prompt": "You are {name!r} {"}, "prompt", "malformed template"),
        ({"greeting": "Hi {0}"}, "greeting", "placeholder"),
        ({"voicemail": "shout"}, "voicemail", "'hangup'"),
        ({"transfer_number": "555"}, "transfer_number", "E.164"),
        ({"recording": True}, "recording", "Extra inputs"),
    ],
)
async def test_a_call_script_is_validated_alike_in_dialout_and_in_a_campaign(vendors, server, script, field, complaint):
    dialout = await server.dialout({"to_number": CALLEE_NUMBER, **script})
    campaign = await server.post("/campaigns", {"name": "n", "settings": {"timezone": "UTC", **script}})
    for response, where in ((dialout, ["body"]), (campaign, ["body", "settings"])):
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"][: len(where) + 1] == [*where, field] and complaint in error["msg"], error
    assert vendors.twilio.calls == {}
    assert (await server.get("/campaigns")).json()["campaigns"] == []
