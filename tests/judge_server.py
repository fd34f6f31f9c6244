"""A judge API server for the tests: speaks Gemini's generateContent and OpenAI-compatible chat
completions, checks the key's header, and misbehaves on request (429 with Retry-After and 503 on
the first requests, latency).

What it answers is decided by `rule(task, prompt, wav) -> text`, a Python callable the test sets
(the server runs in the test's process). The default rule hears "happy" in audio shorter than
`happy_below_s` and "natural" otherwise, and gives paralinguistic prompts a 3 on the same rule.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import soundfile as sf

KEY = "test-judge-key-5f0c2a"


def task_of(prompt: str) -> str:
    if '"emotion"' in prompt:
        return "emotion"
    if '"style"' in prompt:
        return "style"
    return "paralinguistic"


@dataclass
class JudgeServer:
    key: str | None = KEY
    happy_below_s: float = 0.9
    fail_first: list[int] = field(default_factory=list)  # statuses for the first requests
    retry_after: str = "1"
    latency_s: float = 0.0
    rule: Callable[[str, str, bytes], str] | None = None
    # a rule that hears every recording of a request (prompts about two recordings)
    rule_all: Callable[[str, list[bytes]], str] | None = None
    requests: list[dict] = field(default_factory=list)  # every request: path, headers, status
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def default_rule(self, task: str, prompt: str, wav: bytes) -> str:
        audio, rate = sf.read(io.BytesIO(wav))
        short = len(audio) / rate < self.happy_below_s
        if task == "paralinguistic":
            return "3" if short else "1"
        if task == "style":
            return '```json\n{"style": "whisper"}\n```' if short else '{"style": "normal"}'
        return '```json\n{"emotion": "happy"}\n```' if short else '{"emotion": "natural"}'

    def answer(self, prompt: str, wav: bytes) -> str:
        task = task_of(prompt)
        return (self.rule or self.default_rule)(task, prompt, wav)

    # --------------------------------------------------------------------- serving
    def start(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, payload = server.handle(self.path, dict(self.headers), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", server.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
        with self._lock:
            number = len(self.requests)
            entry = {"path": path, "headers": headers, "status": 200}
            self.requests.append(entry)
        if self.latency_s:
            time.sleep(self.latency_s)
        status, payload = self._answer(number, path, headers, body)
        entry["status"] = status
        return status, payload

    def _answer(self, number: int, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
        lower = {k.lower(): v for k, v in headers.items()}
        gemini = path.startswith("/v1beta/models/") and path.endswith(":generateContent")
        openai = path == "/v1/chat/completions"
        if not (gemini or openai):
            return 404, {"error": f"no route {path}"}
        if self.key is not None:
            sent = lower.get("x-goog-api-key") if gemini else lower.get("authorization")
            wanted = self.key if gemini else f"Bearer {self.key}"
            if sent != wanted:
                return 403, {"error": "missing or wrong API key header"}
        if number < len(self.fail_first):
            return self.fail_first[number], {"error": "try again"}
        request = json.loads(body)
        if gemini:
            parts = request["contents"][0]["parts"]
            prompt = self.requests[number]["prompt"] = parts[0]["text"]
            wavs = [base64.b64decode(p["inline_data"]["data"]) for p in parts[1:]]
            text = self._answer_all(number, prompt, wavs)
            return 200, {"candidates": [{"content": {"parts": [{"text": text}]}}]}
        content = request["messages"][0]["content"]
        prompt = self.requests[number]["prompt"] = content[0]["text"]
        wavs = [base64.b64decode(p["input_audio"]["data"]) for p in content[1:]]
        text = self._answer_all(number, prompt, wavs)
        return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}

    def _answer_all(self, number: int, prompt: str, wavs: list[bytes]) -> str:
        self.requests[number]["audio_parts"] = len(wavs)
        if self.rule_all is not None:
            return self.rule_all(prompt, wavs)
        return self.answer(prompt, wavs[0])

    @property
    def answered(self) -> int:
        return sum(1 for r in self.requests if r["status"] == 200)
