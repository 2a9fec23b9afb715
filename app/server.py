"""``valuegym serve [ROOT]``: the web app (Starlette on uvicorn; plain HTML and JavaScript, no build step).

Pages (``static/*.html``) fetch JSON from ``/api/...`` and draw it with DOM text nodes only, so
nothing from the records is ever parsed as HTML. Safety, in one place (:class:`Guard`):

* it binds 127.0.0.1 unless ``--host`` names another interface; then every request must carry
  the token printed once at start (``?token=`` once, a cookie after that);
* on 127.0.0.1 only requests addressed to a loopback name are served (no DNS rebinding);
* every response forbids inline scripts and framing (Content-Security-Policy);
* only ``POST /api/seat`` accepts input, as JSON from the app's own pages, and only for a turn
  that is waiting (:mod:`valuegym.agents.human`); every other route is GET;
* runs are named by paths below the root and resolved by :class:`valuegym.app.runs.Root`.
"""

from __future__ import annotations

import argparse
import hmac
import json
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from valuegym.agents.human import (
    TurnClosedError,
    answer_turn,
    check_action,
    pending_turns,
    read_turn,
    seat_dir,
)
from valuegym.agents.llm.networking import is_loopback
from valuegym.app import reader
from valuegym.app.runs import NotARunError, Root

STATIC = Path(__file__).with_name("static")
DEFAULT_PORT = 8765  # report.html looks for the app here
TOKEN_COOKIE = "valuegym_token"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
MAX_ANSWER_BYTES = 64 * 1024
TURN_FILE = re.compile(r"^\d{8}-\d{4}\.json$")
PAGE_LIMIT = 200
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
#: every page: the same shell; its scripts fetch the JSON and draw the page
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} · valuegym</title>
<link rel="stylesheet" href="/static/app.css">
<script defer src="/static/common.js"></script>{scripts}
</head>
<body>
<header class="top"><a class="brand" href="/">valuegym</a><a href="/">runs</a><span id="where" class="muted"></span></header>
<main id="main"><p class="muted">Loading…</p></main>
</body>
</html>
"""
PING_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)


class Guard:
    """ASGI middleware: host check or token, and the security headers on every response."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token is None:
            if _hostname(headers.get("host", "")) not in LOOPBACK_NAMES:
                await _plain(send, 421, "this app answers only requests addressed to 127.0.0.1 or localhost")
                return
            set_cookie = None
        else:
            given, set_cookie = _token_of(scope, headers)
            if given is None or not hmac.compare_digest(given, self.token):
                await _plain(send, 401, "open the address printed by valuegym serve (it carries the token)")
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
                if set_cookie:
                    cookie = f"{TOKEN_COOKIE}={set_cookie}; HttpOnly; SameSite=Strict; Path=/"
                    message["headers"].append((b"set-cookie", cookie.encode()))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _hostname(host: str) -> str:
    """The name in a Host header, without the port (``[::1]:80`` -> ``[::1]``)."""
    return host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]


def _token_of(scope: Scope, headers: dict[str, str]) -> tuple[str | None, str | None]:
    """The token a request carries, and the cookie to set when it came in the query."""
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            return value, None
    query = scope.get("query_string", b"").decode("latin-1")
    match = re.search(r"(?:^|&)token=([A-Za-z0-9_-]+)", query)
    return (match.group(1), match.group(1)) if match else (None, None)


async def _plain(send: Send, status: int, text: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": text.encode()})


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        reader.dumps(data), status, media_type="application/json", headers={"cache-control": "no-store"}
    )


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


Handler = Callable[[Request], Response]


def create_app(root: str | Path, token: str | None = None) -> ASGIApp:
    """The app serving the runs under ``root``; ``token`` is required of every request when given."""
    runs = Root(root)

    def with_run(handler: Callable[[Request, Path], Response]) -> Handler:
        def endpoint(request: Request) -> Response:
            try:
                run = runs.resolve(request.query_params.get("run"))
            except NotARunError as error:
                return _error(404, str(error))
            return handler(request, run)

        return endpoint

    def page(title: str, *scripts: str) -> Handler:
        shell = PAGE.format(
            title=title, scripts="".join(f'<script defer src="/static/{s}"></script>' for s in scripts)
        )
        return lambda request: Response(shell, media_type="text/html", headers={"cache-control": "no-store"})

    def api_runs(request: Request) -> Response:
        return _json({"root": str(runs.path), "runs": [runs.summary(run) for run in runs.runs()]})

    def api_run(request: Request, run: Path) -> Response:
        summary = runs.summary(run)
        summary["config"] = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
        summary["datasets"] = reader.datasets(run)
        summary["seats"] = [seat.agent for seat in runs.seats(run)]
        return _json(summary)

    def api_episodes(request: Request, run: Path) -> Response:
        query = request.query_params
        try:
            offset = max(0, int(query.get("offset", 0)))
            limit = min(PAGE_LIMIT, max(1, int(query.get("limit", 50))))
        except ValueError:
            return _error(400, "offset and limit must be whole numbers")
        equal = {key[2:]: value for key, value in query.items() if key.startswith("f.")}
        try:
            return _json(reader.episode_page(run, offset, limit, equal, query.get("invalid") == "1"))
        except KeyError as error:
            return _error(400, str(error.args[0]))

    def api_episode(request: Request, run: Path) -> Response:
        try:
            episode_id = int(request.query_params.get("episode", ""))
        except ValueError:
            return _error(400, "episode must be a whole number (an episode id)")
        records = reader.episode(run, episode_id)
        if records is None:
            return _error(404, f"run {runs.run_id(run)} has no episode {episode_id}")
        return _json({"run": runs.run_id(run), **records, **reader.neighbours(run, episode_id)})

    def api_seats(request: Request) -> Response:
        waiting = [{"run": runs.run_id(run), **seat} for run in runs.runs() for seat in runs.waiting(run)]
        return _json({"waiting": waiting})

    def api_seat(request: Request, run: Path) -> Response:
        agent = request.query_params.get("agent", "")
        folder = seat_dir(run, agent)
        if not agent or not folder.is_dir():
            return _error(404, f"run {runs.run_id(run)} has no seat {agent!r}")
        for path in pending_turns(folder) if runs.status(run) == "running" else []:
            turn = read_turn(path)
            if turn is not None and turn.get("deadline", 0) > time.time():
                return _json({"waiting": {**turn, "turn_file": path.name, "now": time.time()}})
        manifest = runs.summary(run)
        return _json(
            {
                "waiting": None,
                "status": manifest["status"],
                "ok": manifest["ok"],
                "requested": manifest["requested"],
            }
        )

    async def api_answer(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "answers are JSON (content-type: application/json)")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return _error(403, "answers come from the app's own pages only")
        body = await request.body()
        if len(body) > MAX_ANSWER_BYTES:
            return _error(413, f"an answer is at most {MAX_ANSWER_BYTES} bytes")
        try:
            run = runs.resolve(request.query_params.get("run"))
            data = json.loads(body)
        except NotARunError as error:
            return _error(404, str(error))
        except ValueError:
            return _error(400, "the body is not JSON")
        agent = request.query_params.get("agent", "")
        name = data.get("turn_file") if isinstance(data, dict) else None
        if not agent or not isinstance(name, str) or not TURN_FILE.match(name):
            return _error(400, 'expected {"turn_file": "<the waiting turn>", "action": {...}} and ?agent=')
        path = seat_dir(run, agent) / name
        waiting = runs.status(run) == "running" and path in pending_turns(path.parent)
        if not waiting or (turn := read_turn(path)) is None:
            return _error(409, "this turn is not waiting for an answer (answered, timed out or over)")
        if turn.get("deadline", 0) <= time.time():
            return _error(409, "this turn timed out; the environment applied its no-op")
        problem = check_action(data.get("action"), turn.get("schema", {}), turn.get("choices"))
        if problem is not None:
            return _error(422, f"not an action: {problem}")
        try:
            answer_turn(path, {"action": data["action"], "answered": time.time()})
        except TurnClosedError as error:
            return _error(409, str(error))
        return _json({"accepted": True})

    def locate(request: Request) -> Response:
        """A report's link: the run at an absolute path, with the report's episode filters."""
        try:
            run_id = runs.locate(request.query_params.get("path", ""))
        except NotARunError as error:
            return Response(str(error), 404, media_type="text/plain")
        query = [
            ("run", run_id),
            *((k, v) for k, v in request.query_params.multi_items() if k.startswith("f.")),
        ]
        return RedirectResponse(f"/run?{urlencode(query)}", 303)

    def ping(request: Request) -> Response:
        return Response(PING_GIF, media_type="image/gif", headers={"cache-control": "no-store"})

    routes = [
        Route("/", page("Runs", "runs.js")),
        Route("/run", page("Run", "run.js")),
        Route("/episode", page("Episode", "views.js", "replay.js")),
        Route("/seat", page("Seat", "views.js", "seat.js")),
        Route("/locate", locate),
        Route("/ping.gif", ping),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/runs", api_runs),
        Route("/api/run", with_run(api_run)),
        Route("/api/episodes", with_run(api_episodes)),
        Route("/api/episode", with_run(api_episode)),
        Route("/api/seats", api_seats),
        Route("/api/seat", with_run(api_seat)),
        Route("/api/seat", api_answer, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    return Guard(Starlette(routes=routes), token)


# ---------------------------------------------------------------------------- the command
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="valuegym serve",
        description="Watch runs live, replay episodes turn by turn, take a human seat.",
    )
    parser.add_argument(
        "root",
        nargs="?",
        default=".",
        help="folder holding runs (default: here; outputs/ and multirun/ under it)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (another than 127.0.0.1 requires the printed token)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        root = Root(args.root)
    except NotADirectoryError as error:
        print(f"valuegym serve: {error}", file=sys.stderr)
        return 2
    token = None if is_loopback(args.host) else secrets.token_urlsafe(24)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as error:
        print(
            f"valuegym serve: cannot listen on {args.host}:{args.port} ({error.strerror}); "
            "choose another port with --port N (0: any free one)",
            file=sys.stderr,
        )
        return 2
    sock.listen(128)  # from now on connections wait for the server, so the address printed works at once
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"valuegym serve: {url}  (runs under {root.path}; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(create_app(root.path, token), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
