"""A small OpenAI-compatible server for tests: loopback only, standard library only.

    with FakeOpenAI() as srv:
        client = OpenAI(base_url=srv.base_url, api_key="test", max_retries=0)
        srv.fail_next = 1            # the next request answers HTTP 500
        srv.fail_models.add("bad")   # every request for model "bad" answers 500

``POST /v1/chat/completions`` answers a realistic body whose usage says 21 prompt tokens (8
of them cached) and 7 completion tokens; with ``"stream": true`` it answers server-sent
events, with the final usage chunk only when ``stream_options.include_usage`` is set, as
OpenAI does. ``POST /v1/embeddings`` answers one 8-dimensional vector (5 prompt tokens).
Failures carry ``retry-after-ms: 1``, so a client that retries does not sleep its backoff.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from genai_prices import Usage, calc_price

__all__ = ["FakeOpenAI", "PROMPT_TOKENS", "COMPLETION_TOKENS", "CACHED_TOKENS",
           "EMBEDDING_TOKENS", "RESPONSE_MODEL_SUFFIX", "genai_prices_cost"]

PROMPT_TOKENS = 21
COMPLETION_TOKENS = 7
CACHED_TOKENS = 8
EMBEDDING_TOKENS = 5
# The response names a dated version of the requested model, as OpenAI's does.
RESPONSE_MODEL_SUFFIX = "-2024-08-06"
_REPLY = ["Hello", " from", " the", " fake", " model", "."]


def genai_prices_cost(model: str, usage: Usage) -> float:
    """What genai-prices itself charges for one call of ``model`` answered by this server:
    the dated model the response names when genai-prices knows it, else the requested one
    (the exporter looks them up in that order)."""
    when = datetime.now(timezone.utc)
    for ref in (model + RESPONSE_MODEL_SUFFIX, model):
        try:
            return float(calc_price(usage, ref, provider_id="openai",
                                    genai_request_timestamp=when).total_price)
        except LookupError:
            continue
    raise LookupError(f"genai-prices has no price for {model}")


def _usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


class FakeOpenAI:
    """The server, on a free loopback port; a context manager that starts and stops it."""

    def __init__(self) -> None:
        self.fail_next = 0
        self.fail_models: set[str] = set()
        self.requests = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _should_fail(self, model: str) -> bool:
        with self._lock:
            self.requests += 1
            if model in self.fail_models:
                return True
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False

    def _handler(srv) -> type[BaseHTTPRequestHandler]:  # noqa: N805 - closes over the server
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, code: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()
                      ) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, obj: Any) -> None:
                body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
                data = b"data: " + body + b"\n\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0)))
                                  or b"{}")
                model = str(body.get("model", ""))
                if srv._should_fail(model):
                    return self._json(500, {"error": {
                        "message": "The server had an error while processing your request.",
                        "type": "server_error", "param": None, "code": None}},
                        (("retry-after-ms", "1"),))
                answered = model + RESPONSE_MODEL_SUFFIX
                created = int(time.time())
                if self.path.endswith("/embeddings"):
                    return self._json(200, {
                        "object": "list", "model": answered,
                        "data": [{"object": "embedding", "index": 0, "embedding": [0.1] * 8}],
                        "usage": {"prompt_tokens": EMBEDDING_TOKENS,
                                  "total_tokens": EMBEDDING_TOKENS}})
                if not self.path.endswith("/chat/completions"):
                    return self._json(404, {"error": {"message": "not found",
                                                      "type": "invalid_request_error"}})
                base = {"id": "chatcmpl-fake", "created": created, "model": answered,
                        "system_fingerprint": "fp_fake", "service_tier": "default"}
                if not body.get("stream"):
                    return self._json(200, {
                        **base, "object": "chat.completion",
                        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                     "message": {"role": "assistant", "content": "".join(_REPLY),
                                                 "refusal": None}}],
                        "usage": _usage()})
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                chunk = {**base, "object": "chat.completion.chunk"}
                with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                extra = {"usage": None} if with_usage else {}
                self._chunk({**chunk, **extra, "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""},
                     "finish_reason": None}]})
                for word in _REPLY:
                    self._chunk({**chunk, **extra, "choices": [
                        {"index": 0, "delta": {"content": word}, "finish_reason": None}]})
                self._chunk({**chunk, **extra, "choices": [
                    {"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if with_usage:
                    self._chunk({**chunk, "choices": [], "usage": _usage()})
                self._chunk(b"[DONE]")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return None

        return Handler
