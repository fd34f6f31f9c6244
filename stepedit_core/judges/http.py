"""The two judge APIs over HTTP: Gemini's generateContent and OpenAI-compatible chat completions.

A request has a timeout; 429 and 5xx answers and dropped connections are retried with
exponential backoff, and a 429's `Retry-After` (seconds) is honoured when it asks for longer.
The API key is read from the environment variable the user names and sent only in a header
(`x-goog-api-key` for Gemini, a bearer token for OpenAI): never in a URL, an error message or
a record. Errors carry the status and a short excerpt of the body, with the key scrubbed.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

GEMINI_ENDPOINT = "https://generativelanguage.googleapis.com"
JUDGE_APIS = ("gemini", "openai")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 120.0  # a Retry-After longer than this is capped, not obeyed blindly


class JudgeRequestFailed(Exception):
    """The API did not give an answer (after retries); the message never holds the key."""


class MissingKey(ValueError):
    """The environment variable named by --key-env is not set."""


@dataclass(frozen=True)
class HttpPolicy:
    timeout_s: float = 60.0
    attempts: int = 6
    backoff_s: float = 1.0  # first wait; doubles each retry, with jitter
    max_backoff_s: float = 30.0


def read_key(key_env: str | None) -> str | None:
    """The key from the named variable (None when no variable is named: a local server)."""
    if not key_env:
        return None
    key = os.environ.get(key_env)
    if not key:
        raise MissingKey(f"--key-env {key_env}: the environment variable {key_env} is not set")
    return key


@dataclass
class JudgeClient:
    """One judge API. `ask(prompt, wav)` returns the model's answer text."""

    api: str
    endpoint: str
    model: str
    key_env: str | None = None
    policy: HttpPolicy = HttpPolicy()
    sleep: Callable[[float], None] = time.sleep
    key: str | None = field(default=None, repr=False)  # read in the driver; else from key_env

    def __post_init__(self) -> None:
        if self.api not in JUDGE_APIS:
            raise ValueError(f"unknown judge {self.api!r}; expected one of {', '.join(JUDGE_APIS)}")
        self.endpoint = (self.endpoint or (GEMINI_ENDPOINT if self.api == "gemini" else "")).rstrip(
            "/"
        )
        if not self.endpoint:
            raise ValueError("the openai judge needs --endpoint (a base URL ending in /v1)")

    @property
    def url(self) -> str:
        if self.api == "gemini":
            return f"{self.endpoint}/v1beta/models/{self.model}:generateContent"
        return f"{self.endpoint}/chat/completions"

    def _headers(self, key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if key:
            if self.api == "gemini":
                headers["x-goog-api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, prompt: str, wavs: tuple[bytes, ...], json_answer: bool) -> dict:
        datas = [base64.b64encode(wav).decode() for wav in wavs]
        if self.api == "gemini":
            audio = [{"inline_data": {"mime_type": "audio/wav", "data": d}} for d in datas]
            body: dict = {"contents": [{"parts": [{"text": prompt}, *audio]}]}
            if json_answer:
                body["generationConfig"] = {"response_mime_type": "application/json"}
            return body
        return {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        *(
                            {"type": "input_audio", "input_audio": {"data": d, "format": "wav"}}
                            for d in datas
                        ),
                    ],
                }
            ],
        }

    def _answer_text(self, payload: dict) -> str:
        try:
            if self.api == "gemini":
                return str(payload["candidates"][0]["content"]["parts"][0]["text"])
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise JudgeRequestFailed(
                f"the {self.api} answer has no text: {json.dumps(payload)[:300]}"
            ) from None

    def ask(
        self, prompt: str, wav: bytes, json_answer: bool = True, more: tuple[bytes, ...] = ()
    ) -> str:
        """The answer to the prompt about `wav` (and the `more` recordings after it, in order)."""
        key = self.key or read_key(self.key_env)
        body = json.dumps(self._body(prompt, (wav, *more), json_answer)).encode()
        headers = self._headers(key)
        last = ""
        for attempt in range(self.policy.attempts):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            wait = self._backoff(attempt)
            try:
                with urllib.request.urlopen(request, timeout=self.policy.timeout_s) as response:
                    return self._answer_text(json.loads(response.read()))
            except urllib.error.HTTPError as exc:
                excerpt = _scrub(exc.read()[:300].decode("utf-8", "replace"), key)
                last = f"HTTP {exc.code} from {self.url}: {excerpt}"
                if exc.code not in RETRY_STATUSES:
                    raise JudgeRequestFailed(last) from None
                wait = max(wait, _retry_after(exc.headers.get("Retry-After")))
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{self.url} unreachable: {_scrub(str(reason), key)}"
            except ValueError as exc:  # a 200 whose body is not JSON
                raise JudgeRequestFailed(f"{self.url}: answer is not JSON ({exc})") from None
            if attempt + 1 < self.policy.attempts:
                self.sleep(wait)
        raise JudgeRequestFailed(f"{last} (gave up after {self.policy.attempts} attempts)")

    def _backoff(self, attempt: int) -> float:
        base = min(self.policy.max_backoff_s, self.policy.backoff_s * 2**attempt)
        return base * (0.5 + random.random() / 2)


def _retry_after(value: str | None) -> float:
    """Seconds a Retry-After header asks for: its seconds, or the time until its HTTP date."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        seconds = when.timestamp() - time.time()
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def _scrub(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text
