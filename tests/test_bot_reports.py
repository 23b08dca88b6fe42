"""The bot's reports reach the server through short outages, and are never silently lost."""

from functools import partial

from aiohttp import web
from loguru import logger

from outcall.calls import CallConfig
from outcall.reports import CallReport, CallReporter
from outcall.server_link import HttpServerLink

CONFIG = CallConfig(call_id="c1", to_number="+14155552671", from_number="+14155550100", system_instruction="",
                    greeting="", wait_for_callee=False, max_duration_secs=60, report_token="v1.1.x")


async def flaky_server(failures: int):
    received = []

    async def report(request: web.Request):
        received.append((request.headers["Authorization"], await request.json()))
        return web.Response(status=503 if len(received) <= failures else 204)

    app = web.Application()
    app.router.add_post("/calls/{call_id}/report", report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", received


async def test_a_report_is_retried_until_the_server_takes_it():
    runner, url, received = await flaky_server(failures=2)
    reporter = CallReporter(partial(HttpServerLink(url).report, CONFIG), "c1", retry_delays=(0.05, 0.05, 0.05))
    assert await reporter.report_final(CallReport(sequence=0, summary="ok"))
    await runner.cleanup()
    assert len(received) == 3
    assert {auth for auth, _ in received} == {"Bearer v1.1.x"}
    assert all(body["final"] and body["sequence"] == 0 for _, body in received)  # the same report each time


async def test_an_undeliverable_final_report_is_logged_in_full():
    lines = []
    sink = logger.add(lines.append, level="ERROR")
    try:
        link = HttpServerLink("http://127.0.0.1:9")  # nothing listens there
        reporter = CallReporter(partial(link.report, CONFIG), "c1", retry_delays=(0.01, 0.01))
        assert not await reporter.report_final(CallReport(sequence=0, summary="the whole story"))
    finally:
        logger.remove(sink)
    assert any("Undelivered final report of call c1" in line and "the whole story" in line for line in lines)
