"""The `openai` backend: any OpenAI-compatible /v1/chat/completions endpoint, over httpx.

OpenAI, Ollama, vLLM, llama.cpp's server and LM Studio all speak it. We ask for a stream and
read the server-sent events ourselves (chatctl.bot.sse), which is all the `openai` package
would do for us here at the cost of a different HTTP stack.

Failure policy: connection errors, timeouts and 408/429/5xx answers are retried with
exponential backoff and jitter, but only until the first piece of the reply has been
yielded (a retry after that would repeat text already sent to the chat) and never past the
overall deadline. A stall (no bytes for `stall_timeout`) is a timeout. Anything else (4xx,
malformed JSON, an error object, an empty reply) is a BackendError at once.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx

from chatctl import __version__
from chatctl.bot.backend import BackendError, chat_messages
from chatctl.bot.brain import Prompt
from chatctl.bot.sse import SSEError, SSEReader

API_KEY_VARS = ("CHATCTL_BOT_API_KEY", "OPENAI_API_KEY")
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # a reply is a few KiB; more than this is garbage


def api_key_from_env() -> str | None:
    """The API key comes from the environment only: a flag value would show up in `ps`."""
    for name in API_KEY_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


class _Retry(Exception):
    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _content(obj: Any, *, stream: bool) -> str:
    """The text in one completion object (a stream chunk or a whole response)."""
    if not isinstance(obj, dict):
        raise BackendError("the model server sent JSON that is not an object")
    if "error" in obj:
        err = obj["error"]
        message = err.get("message") if isinstance(err, dict) else err
        raise BackendError(f"the model server reported an error: {str(message)[:200]}")
    choices = obj.get("choices")
    if not isinstance(choices, list):
        raise BackendError("the model server sent a completion without choices")
    if not choices:
        return ""  # e.g. a final usage-only chunk
    choice = choices[0]
    part = choice.get("delta" if stream else "message") if isinstance(choice, dict) else None
    text = part.get("content") if isinstance(part, dict) else None
    if text is None and isinstance(choice, dict):
        text = choice.get("text")  # legacy completion-style servers
    if text is None:
        return ""
    if not isinstance(text, str):
        raise BackendError("the model server sent content that is not text")
    return text


class OpenAIBackend:
    name = "openai"
    strip_speaker = True

    def __init__(
        self,
        *,
        base_url: str,
        model: str | None,
        api_key: str | None,
        system: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        stall_timeout: float = 20.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_tokens: int | None = None,
    ) -> None:
        headers = {"user-agent": f"chatctl-bot/{__version__}", "accept": "text/event-stream"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.system = system
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_tokens = max_tokens
        self.chunks = 0  # stream chunks with text in the last reply (logged: proof of streaming)
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(stall_timeout, connect=connect_timeout),
            follow_redirects=False,
            trust_env=False,  # the bot talks to the URL it was given, not through a proxy
        )

    def close(self) -> None:
        self._client.close()

    def _resolve_model(self) -> str:
        """--model, else the first model the server lists (llama.cpp and Ollama serve one)."""
        if self.model is None:
            self.model = "default"
            try:
                response = self._client.get(f"{self.base_url}/models", timeout=5.0)
                models = response.json().get("data") if response.status_code == 200 else None
                if isinstance(models, list) and models and isinstance(models[0], dict):
                    self.model = str(models[0].get("id") or "default")
            except (httpx.HTTPError, ValueError, AttributeError):
                pass
        return self.model

    def complete(self, prompt: Prompt) -> Iterator[str]:
        body: dict[str, Any] = {
            "model": self._resolve_model(),
            "messages": chat_messages(prompt, self.system),
            "stream": True,
            # About 3-4 characters a token: no need to pay for text we would cut off.
            "max_tokens": self.max_tokens or max(16, prompt.max_chars // 3),
        }
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            yielded = False
            try:
                for piece in self._attempt(body, deadline):
                    yielded = True
                    yield piece
                return
            except (httpx.TimeoutException, httpx.TransportError, _Retry) as exc:
                reason = _describe(exc)
                after = exc.after if isinstance(exc, _Retry) else None
                if yielded or attempt >= self.retries:
                    raise BackendError(reason) from None
                delay = self.backoff * (2**attempt) * random.uniform(0.5, 1.5)
                if after is not None:
                    delay = max(delay, min(after, 30.0))
                if time.monotonic() + delay >= deadline:
                    raise BackendError(f"{reason} (gave up: out of time)") from None
                time.sleep(delay)
                attempt += 1

    def _attempt(self, body: dict[str, Any], deadline: float) -> Iterator[str]:
        url = f"{self.base_url}/chat/completions"
        with self._client.stream("POST", url, json=body) as response:
            if response.status_code in RETRY_STATUSES:
                raise _Retry(f"HTTP {response.status_code}", _retry_after(response))
            if response.status_code >= 400:
                detail = response.read()[:200].decode("utf-8", "replace")
                raise BackendError(f"HTTP {response.status_code} from the model server: {detail}")
            ctype = response.headers.get("content-type", "")
            if "text/event-stream" in ctype:
                yield from self._events(response, deadline)
                return
            # A server that ignores "stream": one JSON body.
            raw = b""
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > MAX_RESPONSE_BYTES:
                    raise BackendError("the model server's reply is far too large")
                _check_deadline(deadline)
            try:
                obj = json.loads(raw)
            except ValueError:
                raise BackendError("the model server sent malformed JSON") from None
            text = _content(obj, stream=False)
            if not text.strip():
                raise BackendError("the model server sent an empty reply")
            self.chunks = 1
            yield text

    def _events(self, response: httpx.Response, deadline: float) -> Iterator[str]:
        reader = SSEReader()
        received = 0
        got_text = False
        self.chunks = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > MAX_RESPONSE_BYTES:
                raise BackendError("the model server's stream is far too long")
            _check_deadline(deadline)
            try:
                events = reader.feed(chunk)
            except SSEError as exc:
                raise BackendError(str(exc)) from None
            for event in events:
                if event.data.strip() == "[DONE]":
                    if not got_text:
                        raise BackendError("the model server sent an empty reply")
                    return
                try:
                    obj = json.loads(event.data)
                except ValueError:
                    raise BackendError("the model server sent malformed JSON") from None
                text = _content(obj, stream=True)
                if text:
                    got_text = got_text or bool(text.strip())
                    self.chunks += 1
                    yield text
        if not got_text:
            raise BackendError("the model server closed the stream without a reply")


def _check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise BackendError("the model server is too slow (overall timeout)")


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"the model server timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach the model server ({type(exc).__name__}: {exc})"
    return f"the model server is unavailable ({exc})"
