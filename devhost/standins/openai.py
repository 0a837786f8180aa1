"""A stand-in for OpenAI's (and Azure OpenAI's) audio transcription endpoint.

It behaves as external-apis.md §2 documents the real service:

- ``POST /v1/audio/transcriptions`` with ``Authorization: Bearer``; Azure's
  ``POST /openai/deployments/<deployment>/audio/transcriptions?api-version=...`` with an ``api-key`` header;
- multipart validation: ``model`` required; ``file`` with an extension-bearing filename in the supported list;
  ``response_format`` in json/text/srt/verbose_json/vtt (gpt-4o models: json/text only);
  ``timestamp_granularities[]`` only with verbose_json; ``language`` as ISO-639-1;
- bodies over 26,214,400 bytes → 413 with the real error body; gpt-4o duration caps (1500 s, 1400 s);
- the audio is probed with PyAV: undecodable → 400; ``verbose_json`` segments (10 s windows) span the
  upload's real duration, and ``language`` comes back as a name ("english"), as Whisper answers;
- ``fail_next(status, retry_after_s=..., count=...)`` (or ``POST /_control/fail``) injects 429 / 5xx;
- every response carries ``x-request-id``; ``requests`` records what each call sent (not the audio).

Run: ``python -m devhost.standins.openai --port 18080``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import av

from devhost.standins import serve_until_stopped, serving_in_thread

__all__ = ["MAX_BODY_BYTES", "OpenAIServer", "main", "parse_multipart", "running_openai_server"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 26_214_400
SEGMENT_S = 10.0
_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
_RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
_LANGUAGE_NAMES = {"en": "english", "hi": "hindi", "ta": "tamil", "te": "telugu", "mr": "marathi",
                   "bn": "bengali", "gu": "gujarati", "kn": "kannada", "ml": "malayalam", "de": "german",
                   "fr": "french", "es": "spanish"}
_AZURE_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/audio/transcriptions$")


class OpenAIServer(ThreadingHTTPServer):
    """The server; tests read ``base_url``, ``azure_endpoint`` and ``requests``."""

    daemon_threads = True

    def __init__(self, port: int = 0, *, api_key: str = "sk-test", language: str = "en") -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.api_key = api_key
        self.language = language
        self.requests: list[dict[str, Any]] = []
        self.failures: list[tuple[int, float | None]] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail_next(self, status: int, *, retry_after_s: float | None = None, count: int = 1) -> None:
        """Answer the next ``count`` transcription requests with ``status`` (429 carries Retry-After)."""
        with self.lock:
            self.failures.extend([(status, retry_after_s)] * count)


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}


def parse_multipart(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """Parts of a multipart/form-data body: ``name``, ``filename`` (or None), ``content_type``, ``data``."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or not match:
        raise _ApiError(400, "Invalid Content-Type header, expected multipart/form-data.")
    delimiter = b"--" + match.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name_match = re.search(r'\bname="([^"]*)"', disposition)
        file_match = re.search(r'\bfilename="([^"]*)"', disposition)
        parts.append({"name": name_match.group(1) if name_match else "",
                      "filename": file_match.group(1) if file_match else None,
                      "content_type": headers.get("content-type"), "data": data.removesuffix(b"\r\n")})
    return parts


class _Handler(BaseHTTPRequestHandler):
    server: OpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("openai: %s", format % args)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/_control/fail":
                spec = json.loads(self._read_body(MAX_BODY_BYTES))
                self.server.fail_next(int(spec["status"]), retry_after_s=spec.get("retry_after_s"),
                                      count=int(spec.get("count", 1)))
                self._json(204, None)
                return
            azure = _AZURE_PATH.match(path)
            if path != "/v1/audio/transcriptions" and not azure:
                raise _ApiError(404, f"Invalid URL (POST {path})")  # noqa: TRY301 - one error exit
            self._check_auth(azure=azure is not None)
            body = self._read_body(MAX_BODY_BYTES)
            if self._inject_failure():
                return
            status, payload, content_type = self._transcribe(body, azure["deployment"] if azure else None)
            self._send(status, payload, content_type)
        except _ApiError as exc:
            self._json(exc.status, exc.body)

    def do_GET(self) -> None:
        # The stand-in serves transcriptions only; other routes answer as the real API does for an unknown URL.
        path = urlsplit(self.path).path
        self._json(404, _ApiError(404, f"Invalid URL (GET {path})").body)

    def _check_auth(self, *, azure: bool) -> None:
        key = self.headers.get("api-key") if azure else None
        bearer = self.headers.get("Authorization", "")
        given = key or (bearer[7:] if bearer.startswith("Bearer ") else None)
        if given != self.server.api_key:
            self._drain()
            raise _ApiError(401, "Incorrect API key provided. You can find your API key at "
                            "https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def _read_body(self, limit: int) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self._drain()
            raise _ApiError(413, f"413: Maximum content size limit ({limit}) exceeded ({length} bytes read)",
                            type_="server_error")
        return self.rfile.read(length)

    def _drain(self) -> None:
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            got = self.rfile.read(min(remaining, 1 << 20))
            if not got:
                break
            remaining -= len(got)

    def _inject_failure(self) -> bool:
        with self.server.lock:
            failure = self.server.failures.pop(0) if self.server.failures else None
        if failure is None:
            return False
        status, retry_after_s = failure
        headers = {}
        if retry_after_s is not None:
            headers = {"retry-after": f"{retry_after_s:g}", "retry-after-ms": str(int(retry_after_s * 1000))}
        if status == 429:
            error = _ApiError(429, "Rate limit reached for whisper-1 on requests per min (RPM): Limit 50, "
                              "Used 50, Requested 1.", type_="requests", code="rate_limit_exceeded")
        else:
            error = _ApiError(status, "The server had an error while processing your request. Sorry about that!",
                              type_="server_error")
        self._json(status, error.body, headers)
        return True

    def _transcribe(self, body: bytes, deployment: str | None) -> tuple[int, bytes, str]:
        fields = _fields(parse_multipart(self.headers.get("Content-Type", ""), body))
        model = deployment or fields.get("model")
        if not model:
            raise _ApiError(400, "you must provide a model parameter", param="model")
        upload = fields.get("file")
        if not isinstance(upload, dict):
            raise _ApiError(400, "you must provide a file parameter", param="file")
        response_format = str(fields.get("response_format") or "json")
        granularities = fields.get("timestamp_granularities[]", [])
        language = fields.get("language")
        _validate(model, upload, response_format, granularities, language)
        duration_s = _probe(upload)
        cap_s = 1400.0 if "diarize" in model else 1500.0 if model.startswith("gpt-4o") else None
        if cap_s is not None and duration_s > cap_s:
            raise _ApiError(400, f"audio duration {duration_s:.2f} seconds is longer than {cap_s:.0f} seconds "
                            "which is the maximum for this model", code="invalid_value")
        with self.server.lock:
            self.server.requests.append({"model": model, "filename": upload["filename"],
                                         "content_type": upload["content_type"], "size": len(upload["data"]),
                                         "response_format": response_format, "language": language,
                                         "prompt": fields.get("prompt"), "granularities": granularities,
                                         "duration_s": duration_s, "azure": deployment is not None})
        return _answer(model, response_format, duration_s, language or self.server.language)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex)
        self.send_header("openai-processing-ms", "12")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, b"" if payload is None else json.dumps(payload).encode(), "application/json", headers)


def _fields(parts: list[dict[str, Any]]) -> dict[str, Any]:
    fields: dict[str, Any] = {"timestamp_granularities[]": []}
    for part in parts:
        if part["name"] == "file":
            fields["file"] = part
        elif part["name"] == "timestamp_granularities[]":
            fields["timestamp_granularities[]"].append(part["data"].decode())
        else:
            fields[part["name"]] = part["data"].decode("utf-8", "replace")
    return fields


def _validate(model: str, upload: dict[str, Any], response_format: str, granularities: list[str],
              language: str | None) -> None:
    filename = upload["filename"] or ""
    extension = filename.rsplit(".", 1)[1].lower() if "." in filename else ""
    if extension not in _FORMATS:
        raise _ApiError(400, f"Unrecognized file format. Supported formats: {list(_FORMATS)}", param="file")
    if response_format not in _RESPONSE_FORMATS:
        raise _ApiError(400, f"'{response_format}' is not one of {list(_RESPONSE_FORMATS)} - 'response_format'",
                        param="response_format")
    if model.startswith("gpt-4o") and response_format not in ("json", "text", "diarized_json"):
        raise _ApiError(400, f"response_format '{response_format}' is not compatible with model '{model}'. "
                        "Use 'json' or 'text' instead.", param="response_format", code="unsupported_value")
    if granularities and response_format != "verbose_json":
        raise _ApiError(400, "timestamp_granularities requires response_format=verbose_json",
                        param="timestamp_granularities")
    if any(g not in ("word", "segment") for g in granularities):
        raise _ApiError(400, "timestamp_granularities must be 'word' or 'segment'", param="timestamp_granularities")
    if language is not None and not re.fullmatch(r"[a-z]{2}", language):
        raise _ApiError(400, f"Invalid language '{language}'. Language parameter must be specified in ISO-639-1 "
                        "format.", param="language", code="invalid_language_format")


def _probe(upload: dict[str, Any]) -> float:
    suffix = "." + upload["filename"].rsplit(".", 1)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
        handle.write(upload["data"])
        handle.flush()
        try:
            with av.open(handle.name) as container:
                if not container.streams.audio:
                    raise _ApiError(400, "Audio file might be corrupted or unsupported", param="file",
                                    code="invalid_value")
                if container.duration:
                    return float(container.duration) / 1_000_000
                stream = container.streams.audio[0]
                return sum(f.samples for f in container.decode(stream)) / float(stream.rate or 1)
        except av.error.FFmpegError:
            raise _ApiError(400, "Audio file might be corrupted or unsupported", param="file",
                            code="invalid_value") from None


def _segments(duration_s: float) -> list[dict[str, Any]]:
    segments, start, index = [], 0.0, 0
    while start < duration_s - 1e-6:
        end = min(duration_s, start + SEGMENT_S)
        segments.append({"id": index, "seek": int(start * 100), "start": round(start, 2), "end": round(end, 2),
                         "text": f" Audio from {start:.0f} to {end:.0f} seconds.", "tokens": [50364, 2000 + index],
                         "temperature": 0.0, "avg_logprob": -0.1 - 0.05 * (index % 4),
                         "compression_ratio": 1.2, "no_speech_prob": 0.01})
        start, index = end, index + 1
    return segments


def _answer(model: str, response_format: str, duration_s: float, language: str) -> tuple[int, bytes, str]:
    segments = _segments(duration_s)
    text = "".join(s["text"] for s in segments).strip()
    if response_format == "text":
        return 200, text.encode(), "text/plain; charset=utf-8"
    if response_format == "verbose_json":
        body: dict[str, Any] = {"task": "transcribe", "language": _LANGUAGE_NAMES.get(language, language),
                                "duration": round(duration_s, 2), "text": text, "segments": segments,
                                "usage": {"type": "duration", "seconds": int(duration_s + 0.999)}}
    elif model.startswith("gpt-4o"):
        body = {"text": text, "usage": {"type": "tokens", "input_tokens": 100, "output_tokens": 20,
                                        "total_tokens": 120}}
    else:
        body = {"text": text, "usage": {"type": "duration", "seconds": int(duration_s + 0.999)}}
    return 200, json.dumps(body).encode(), "application/json"


@contextmanager
def running_openai_server(**kwargs: Any) -> Iterator[OpenAIServer]:
    """Start an ``OpenAIServer`` on a free port in a thread; shut it down afterwards."""
    server = OpenAIServer(**kwargs)
    with serving_in_thread(server, "openai-standin"):
        yield server


def main(argv: list[str] | None = None) -> None:
    """Command line: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--api-key", default="sk-test")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = OpenAIServer(args.port, api_key=args.api_key)
    log.info("OpenAI stand-in on %s", server.base_url)
    serve_until_stopped(server)


if __name__ == "__main__":
    main()
