"""Bad input to the calls API and Twilio's callbacks: a clear 4xx, and nothing changes."""

import pytest
from twilio.request_validator import RequestValidator

from outcall.stream_auth import issue_report_token
from tests.conftest import API_KEY, AUTH_TOKEN, CALLEE_NUMBER


@pytest.fixture
async def ended_call(vendors, server) -> dict:
    vendors.twilio.answer_as[CALLEE_NUMBER] = "busy"
    response = (await server.dialout({"to_number": CALLEE_NUMBER})).json()
    await vendors.twilio.calls[response["call_sid"]].settled()
    return await server.record(response["call_id"])


def signed(server, path: str, params: dict) -> dict:
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(server.url + path, params)}


async def test_listing_rejects_bad_filters_clearly(server, ended_call):
    for params, status, words in [
        ({"status": "finished"}, 422, "status"),
        ({"end_reason": "bored"}, 422, "end_reason"),
        ({"limit": 0}, 422, "limit"),
        ({"created_after": "last tuesday"}, 422, "created_after"),
        ({"cursor": "not-a-cursor"}, 400, "next_cursor"),
    ]:
        response = await server.get("/calls", **params)
        assert response.status_code == status, (params, response.text)
        assert words in response.text
    assert (await server.client.get("/calls")).status_code == 401
    assert (await server.get("/calls/no-such-call")).status_code == 404


async def test_reports_need_the_calls_own_report_token(server, ended_call):
    call_id = ended_call["id"]
    report = {"sequence": 9, "final": True, "transcript": [], "summary": "forged"}
    other = issue_report_token("test-stream-secret", call_id="another-call", ttl_secs=60)
    expired = issue_report_token("test-stream-secret", call_id=call_id, ttl_secs=-10)
    for headers in [{}, {"Authorization": f"Bearer {other}"}, {"Authorization": f"Bearer {expired}"},
                    {"Authorization": f"Bearer {API_KEY}"}]:
        response = await server.client.post(f"/calls/{call_id}/report", json=report, headers=headers)
        assert response.status_code == 401, response.text
    valid = {"Authorization": f"Bearer {issue_report_token('test-stream-secret', call_id=call_id, ttl_secs=60)}"}
    bad_body = await server.client.post(f"/calls/{call_id}/report", json={"sequence": -1}, headers=valid)
    assert bad_body.status_code == 422
    transfer = await server.client.post(f"/calls/{call_id}/transfer", headers=valid)
    assert transfer.status_code == 409 and "TRANSFER_NUMBER" in transfer.json()["detail"]
    assert await server.record(call_id) == ended_call


async def test_twilio_callbacks_must_be_signed_and_name_our_call(server, ended_call):
    call_id, sid = ended_call["id"], ended_call["call_sid"]
    path = f"/twilio/status?call_id={call_id}"
    late = {"CallSid": sid, "CallStatus": "completed", "CallDuration": "99"}
    forged = await server.client.post(path, data=late, headers={"X-Twilio-Signature": "bm9wZQ=="})
    assert forged.status_code == 403
    other_sid = {"CallSid": "CA" + "0" * 32, "CallStatus": "completed"}
    assert (await server.client.post(path, data=other_sid, headers=signed(server, path, other_sid))).status_code == 404
    unknown = "/twilio/status?call_id=nope"
    assert (await server.client.post(unknown, data=late, headers=signed(server, unknown, late))).status_code == 404
    # A genuine but late, different final status is accepted and changes nothing.
    assert (await server.client.post(path, data=late, headers=signed(server, path, late))).status_code == 204
    amd_path = f"/twilio/amd?call_id={call_id}"
    amd = {"CallSid": sid, "AnsweredBy": "machine_end_beep"}
    assert (await server.client.post(amd_path, data=amd)).status_code == 403
    recording_path = f"/twilio/recording?call_id={call_id}"
    recording = {"CallSid": sid, "RecordingStatus": "completed", "RecordingSid": "RE1", "RecordingUrl": "https://x"}
    assert (await server.client.post(recording_path, data=recording)).status_code == 403
    assert await server.record(call_id) == ended_call


async def test_dialout_rejects_bad_lifecycle_options(server):
    for payload, field in [
        ({"voicemail": "sometimes"}, "voicemail"),
        ({"transfer_number": "555-1234"}, "transfer_number"),
        ({"voicemail_message": "Hi {first_name}"}, "voicemail_message"),
    ]:
        response = await server.dialout({"to_number": CALLEE_NUMBER, **payload})
        assert response.status_code == 422, response.text
        assert field in response.text
    assert (await server.get("/calls")).json()["calls"] == []
