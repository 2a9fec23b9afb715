"""Test doubles of the LLM layer: real local servers for tests and benchmarks (127.0.0.1 only),
and a scripted backend for unit tests of pure logic.

Test-only, yet installed with the package: Ray tasks of the tests and the ``bench/`` scripts
import it, and neither has the ``tests/`` folder on its path.

* :class:`LlamaServerProcess`: ``python -m llama_cpp.server`` with a GGUF file (by default
  the bundled SmolLM2) in a subprocess: a genuine OpenAI-compatible server that can be
  started, killed mid-run and restarted.
* :class:`StubOpenAIServer`: a minimal OpenAI-compatible chat endpoint in a background
  thread that replies after a fixed latency with a scripted text, can fail its first
  requests with chosen HTTP statuses (with a Retry-After), refuse response_format types
  as a server that lacks them does, reject bursts beyond a request rate with 429 (a
  hosted API's rate limit), and records what it received and when. For throughput
  benchmarks and for faults a real model cannot be made to produce on demand
  (slow replies, non-JSON text, rate limits).

Both are context managers exposing ``base_url`` (ending in ``/v1``).

* :class:`MockBackend`: scripted replies, for unit tests of pure logic only.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from valuegym.agents.llm.backends.base import Completion, CompletionRequest, LLMBackend
from valuegym.agents.llm.backends.gguf import bundled_smollm2_path

HOST = "127.0.0.1"

#: a reply that is a valid DECIDE-SIM decision
DECIDE_SIM_REPLY = json.dumps(
    {
        "reasoning": "Stay put and save power.",
        "action": {"action": "WAIT", "target": "", "amount": 0, "message": ""},
    }
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _models_endpoint_answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class LlamaServerProcess:
    """``llama_cpp.server`` on 127.0.0.1 and a free port, in a subprocess."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_threads: int = 1,
        n_ctx: int = 4096,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else bundled_smollm2_path()
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}/v1"
        self._process: subprocess.Popen[bytes] | None = None
        # a file, not a pipe: a full pipe would stall the server; closed in __exit__
        self._log = tempfile.TemporaryFile()  # noqa: SIM115

    def start(self) -> LlamaServerProcess:
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--host", HOST, "--port", str(self.port),
            "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads),
            "--n_ctx", str(self.n_ctx),
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        while not _models_endpoint_answers(self.base_url):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama_cpp.server did not answer within {self.startup_timeout_s} s")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 2000) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-chars:]

    def __enter__(self) -> LlamaServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._log.close()


class StubOpenAIServer:
    """A scripted OpenAI-compatible chat endpoint served from a background thread.

    ``reply`` is the text of every reply, or a function of the request body returning
    it; each reply comes after ``latency_s``. The first ``len(fail_first)`` chat requests
    are answered with those HTTP statuses instead (the error message echoes the request's
    Authorization header, as some providers echo the key; ``retry_after_s`` is sent as a
    Retry-After header). A request whose ``response_format.type`` is in ``refused_formats``
    gets HTTP 500 naming response_format, as llama-cpp-python's server answers
    ``json_schema``. With ``max_per_second``, a request arriving when that many arrived in
    the last second is rejected with 429 (``rejected`` counts them). ``requests`` holds every
    chat request body received, ``arrivals`` their monotonic arrival times, and
    ``authorizations`` their Authorization headers. ``malformed_first`` lists raw bodies the
    chat requests after the failed ones get with HTTP 200 (a proxy's HTML page, broken JSON).
    """

    def __init__(
        self,
        reply: str | Callable[[dict[str, Any]], str] = DECIDE_SIM_REPLY,
        *,
        latency_s: float = 0.0,
        fail_first: Sequence[int] = (),
        retry_after_s: float | None = None,
        refused_formats: Sequence[str] = (),
        max_per_second: int | None = None,
        malformed_first: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.malformed_first = list(malformed_first)
        self.reply = reply
        self.latency_s = latency_s
        self.fail_first = list(fail_first)
        self.retry_after_s = retry_after_s
        self.refused_formats = set(refused_formats)
        self.max_per_second = max_per_second
        self.rejected = 0
        self._recent: collections.deque[float] = collections.deque()
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.authorizations: list[str] = []
        self.port = port if port is not None else free_port()
        self.base_url = f"http://{HOST}:{self.port}/v1"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        async def models(request: Request) -> JSONResponse:
            return JSONResponse(
                {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "test"}]}
            )

        async def chat(request: Request) -> Response:
            body = await request.json()
            now = time.monotonic()
            self.requests.append(body)
            self.arrivals.append(now)
            self.authorizations.append(request.headers.get("authorization", ""))
            if self.max_per_second is not None:
                while self._recent and self._recent[0] <= now - 1.0:
                    self._recent.popleft()
                if len(self._recent) >= self.max_per_second:
                    self.rejected += 1
                    return JSONResponse(
                        {"error": {"message": f"rate limit: {self.max_per_second} requests per second"}},
                        status_code=429,
                        headers={"retry-after": "1"},
                    )
                self._recent.append(now)
            if len(self.requests) <= len(self.fail_first):
                status = self.fail_first[len(self.requests) - 1]
                # Like OpenAI's "Incorrect API key provided: ...", the error echoes the credential,
                # so tests can check that clients keep it out of what they report.
                message = f"stub failure {status} for {self.authorizations[-1]}"
                headers = (
                    {"retry-after": f"{self.retry_after_s:g}"} if self.retry_after_s is not None else None
                )
                return JSONResponse({"error": {"message": message}}, status_code=status, headers=headers)
            malformed = len(self.requests) - len(self.fail_first) - 1
            if 0 <= malformed < len(self.malformed_first):
                raw = self.malformed_first[malformed]
                kind = "text/html" if raw.lstrip().startswith("<") else "application/json"
                return Response(raw, status_code=200, media_type=kind)
            requested_format = (body.get("response_format") or {}).get("type")
            if requested_format in self.refused_formats:
                message = f"response_format.type: input should be one of {sorted({'text', 'json_object'} - self.refused_formats)}"
                return JSONResponse({"error": {"message": message}}, status_code=500)
            await asyncio.sleep(self.latency_s)
            text = self.reply(body) if callable(self.reply) else self.reply
            return JSONResponse(
                {
                    "id": f"stub-{len(self.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "stub"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": sum(
                            len(str(m.get("content", "")).split()) for m in body["messages"]
                        ),
                        "completion_tokens": len(text.split()),
                        "total_tokens": 0,
                    },
                }
            )

        return Starlette(
            routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])]
        )

    def start(self) -> StubOpenAIServer:
        import uvicorn

        config = uvicorn.Config(
            self._app(),
            host=HOST,
            port=self.port,
            log_level="warning",
            access_log=False,
            backlog=1024,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="stub-openai-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the stub server did not start on {HOST}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> StubOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_stub_forever(port: int, latency_s: float) -> None:
    """Answer every chat completion with :data:`DECIDE_SIM_REPLY` after ``latency_s``, until the
    process is ended.

    For benchmarks, which run the endpoint in its own process (``multiprocessing``) so that
    the server's work does not compete with the client's for one interpreter. A lean aiohttp
    server with one prepared reply, not :class:`StubOpenAIServer` (Starlette on uvicorn's
    pure-Python HTTP parser costs ~2 ms per request, which would be the bottleneck at
    hundreds of calls per second).
    """
    from aiohttp import web

    reply = json.dumps(
        {
            "id": "stub",
            "object": "chat.completion",
            "created": 0,
            "model": "stub",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": DECIDE_SIM_REPLY},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 700, "completion_tokens": 30, "total_tokens": 730},
        }
    ).encode()
    models = json.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}).encode()

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(latency_s)
        return web.Response(body=reply, content_type="application/json")

    async def model_list(request: web.Request) -> web.Response:
        return web.Response(body=models, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", model_list)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None, backlog=2048)


def wait_until_serving(base_url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not _models_endpoint_answers(base_url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answers at {base_url} after {timeout_s} s")
        time.sleep(0.05)


def rate_limited_calls(base_url: str, count: int, rpm: float) -> None:
    """``count`` calls to ``base_url`` at once under a cluster-scope ``rpm`` limit (a Ray task in
    tests: the function must live in an importable module for Ray workers)."""
    from valuegym.agents.llm.backends.base import ChatMessage, CompletionRequest
    from valuegym.agents.llm.backends.openai_compatible import OpenAICompatibleBackend
    from valuegym.agents.llm.backends.rate_limit import RateLimitedBackend

    backend = RateLimitedBackend(
        OpenAICompatibleBackend(base_url, "stub", json_mode="none"),
        base_url,
        rpm=rpm,
        tpm=None,
        scope="cluster",
    )

    async def calls() -> None:
        try:
            await asyncio.gather(
                *(
                    backend.complete(CompletionRequest((ChatMessage("user", f"call {i}"),), 0.0, 16, i))
                    for i in range(count)
                )
            )
        finally:
            await backend.close()

    asyncio.run(calls())


class MockBackend(LLMBackend):
    """Scripted replies for unit tests of pure logic: each call takes the next item.

    An item that is an exception is raised instead of replied. ``requests`` records
    every request received, in order. Token counts are word counts.
    """

    kind = "mock"

    def __init__(self, replies: Sequence[str | BaseException], *, model_id: str = "mock") -> None:
        self._replies = list(replies)
        self._model_id = model_id
        self.requests: list[CompletionRequest] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    async def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        if len(self.requests) > len(self._replies):
            raise AssertionError(f"MockBackend has no scripted reply for call {len(self.requests)}")
        reply = self._replies[len(self.requests) - 1]
        if isinstance(reply, BaseException):
            raise reply
        return Completion(
            text=reply,
            prompt_tokens=sum(len(message.content.split()) for message in request.messages),
            completion_tokens=len(reply.split()),
            latency_s=0.0,
            finish_reason="stop",
        )


class InFlightCountingBackend(LLMBackend):
    """Answers ``text`` after ``delay_s`` and counts the calls in flight at once (``most_in_flight``),
    for tests of concurrency limits."""

    kind = "slow"
    model_id = "slow"

    def __init__(self, text: str = "ok", delay_s: float = 0.01) -> None:
        self.text = text
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.delay_s)
        self.in_flight -= 1
        return Completion(self.text, 1, 1, self.delay_s)
