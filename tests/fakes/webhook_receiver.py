"""A receiver for our outgoing call events: records each delivery, can refuse the first ones."""

import json

from aiohttp import web

from tests.fakes.http import serve


class WebhookReceiver:
    """POST / records `(headers, body)`; answers 500 to the first `fail_first` deliveries."""

    def __init__(self, fail_first: int = 0):
        self.fail_first = fail_first
        self.deliveries: list[tuple[dict[str, str], bytes, int]] = []
        self.url = ""
        self._runner = None

    async def start(self) -> "WebhookReceiver":
        app = web.Application()
        app.router.add_post("/", self._receive)
        self._runner, root = await serve(app)
        self.url = f"{root}/"
        return self

    async def stop(self):
        await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 500 if len(self.deliveries) < self.fail_first else 200
        self.deliveries.append((dict(request.headers), body, status))
        return web.Response(status=status)

    def accepted_events(self) -> list[dict]:
        return [json.loads(body) for _, body, status in self.deliveries if status == 200]
