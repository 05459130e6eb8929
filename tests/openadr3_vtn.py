"""TEST DOUBLE: the smallest OpenADR 3.0.1 VTN this test suite needs, written from the spec.

No installable OpenADR 3 VTN runs here (``openadr3-client`` and its test tooling need
Python ≥ 3.12; this project supports 3.11), so the OpenADR 3 VEN is tested against this double:
an ``aiohttp`` app on 127.0.0.1 with the REST resources of the 3.0.1 OpenAPI definition that a
VEN uses — ``POST /auth/token`` (client credentials → bearer token), ``GET/POST /programs``,
``GET/POST /events`` (``programID`` filter), ``DELETE /events/{id}``, ``GET/POST /reports`` — with
bearer-token checks and the required-field checks of the ``event`` and ``report`` schemas
(``programID``, ``intervals`` / ``resources``, ``objectType``). It is not a conforming VTN:
no subscriptions, no pagination, no VEN/resource objects.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from aiohttp import web

CLIENT_ID, CLIENT_SECRET = "ven-client", "ven-secret"
BL_ID, BL_SECRET = "bl-client", "bl-secret"


class TestVtn:
    def __init__(self) -> None:
        self.programs: dict[str, dict] = {}
        self.events: dict[str, dict] = {}
        self.reports: list[dict] = []
        self.tokens: dict[str, str] = {}
        self._ids = itertools.count(1)
        self.app = web.Application()
        self.app.add_routes(
            [
                web.post("/auth/token", self.token),
                web.get("/programs", self.get_programs),
                web.post("/programs", self.post_program),
                web.get("/events", self.get_events),
                web.post("/events", self.post_event),
                web.delete("/events/{id}", self.delete_event),
                web.get("/reports", self.get_reports),
                web.post("/reports", self.post_report),
            ]
        )
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # --- auth -------------------------------------------------------------------------------
    async def token(self, req: web.Request) -> web.Response:
        form = await req.post()
        who = {(CLIENT_ID, CLIENT_SECRET): "VEN", (BL_ID, BL_SECRET): "BL"}.get(
            (form.get("client_id"), form.get("client_secret"))
        )
        if form.get("grant_type") != "client_credentials" or who is None:
            return web.json_response({"title": "invalid client"}, status=401)
        tok = f"tok-{next(self._ids)}"
        self.tokens[tok] = who
        return web.json_response({"access_token": tok, "token_type": "Bearer", "expires_in": 3600})

    def _role(self, req: web.Request) -> str | None:
        h = req.headers.get("Authorization", "")
        return self.tokens.get(h[7:]) if h.startswith("Bearer ") else None

    def _need(self, req: web.Request, *roles: str) -> web.Response | None:
        role = self._role(req)
        if role is None:
            return web.json_response({"title": "unauthorized"}, status=401)
        if role not in roles:
            return web.json_response({"title": "forbidden"}, status=403)
        return None

    def _stamp(self, obj: dict, kind: str) -> dict:
        now = datetime.now(UTC).isoformat()
        return {
            **obj,
            "id": str(next(self._ids)),
            "objectType": kind,
            "createdDateTime": now,
            "modificationDateTime": now,
        }

    # --- programs / events ------------------------------------------------------------------
    async def get_programs(self, req: web.Request) -> web.Response:
        return self._need(req, "VEN", "BL") or web.json_response(list(self.programs.values()))

    async def post_program(self, req: web.Request) -> web.Response:
        if (bad := self._need(req, "BL")) is not None:
            return bad
        body = await req.json()
        if not body.get("programName"):
            return web.json_response({"title": "programName required"}, status=400)
        p = self._stamp(body, "PROGRAM")
        self.programs[p["id"]] = p
        return web.json_response(p, status=201)

    async def get_events(self, req: web.Request) -> web.Response:
        if (bad := self._need(req, "VEN", "BL")) is not None:
            return bad
        pid = req.query.get("programID")
        return web.json_response(
            [e for e in self.events.values() if pid is None or e["programID"] == pid]
        )

    async def post_event(self, req: web.Request) -> web.Response:
        if (bad := self._need(req, "BL")) is not None:
            return bad
        body = await req.json()
        if body.get("programID") not in self.programs or not isinstance(
            body.get("intervals"), list
        ):
            return web.json_response({"title": "programID and intervals required"}, status=400)
        e = self._stamp(body, "EVENT")
        self.events[e["id"]] = e
        return web.json_response(e, status=201)

    async def delete_event(self, req: web.Request) -> web.Response:
        if (bad := self._need(req, "BL")) is not None:
            return bad
        e = self.events.pop(req.match_info["id"], None)
        return web.json_response(e or {"title": "not found"}, status=200 if e else 404)

    # --- reports ----------------------------------------------------------------------------
    async def get_reports(self, req: web.Request) -> web.Response:
        return self._need(req, "VEN", "BL") or web.json_response(self.reports)

    async def post_report(self, req: web.Request) -> web.Response:
        if (bad := self._need(req, "VEN")) is not None:
            return bad
        body = await req.json()
        missing = [k for k in ("programID", "eventID", "clientName", "resources") if k not in body]
        if body.get("objectType") != "REPORT" or missing or body["eventID"] not in self.events:
            return web.json_response({"title": f"bad report (missing {missing})"}, status=400)
        r = self._stamp(body, "REPORT")
        self.reports.append(r)
        return web.json_response(r, status=201)
