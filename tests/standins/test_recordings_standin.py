"""The recording stand-in behaves as Exotel's private recording host: Basic auth, then real audio."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.standins.audio import probe_duration_s
from devhost.standins.recordings import RecordingServer, running_recording_server


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with running_recording_server(user="key", password="token") as running:
        yield running


def _get(url: str, auth: str | None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url)  # noqa: S310 - loopback stand-in
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback stand-in
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_recording_without_credentials_gets_401_with_a_basic_challenge(server: RecordingServer) -> None:
    status, _, headers = _get(server.recording_url("c1", duration_s=2), None)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert _get(server.recording_url("c1", duration_s=2), "key:nope")[0] == 401


@pytest.mark.parametrize("fmt", ["wav", "mp3", "ogg", "flac"])
def test_recording_with_credentials_is_decodable_audio_of_the_requested_duration(
    server: RecordingServer, tmp_path: Path, fmt: str
) -> None:
    status, body, headers = _get(server.recording_url("c1", duration_s=7, fmt=fmt), "key:token")
    assert status == 200
    assert headers["Content-Type"].startswith("audio/")
    path = tmp_path / f"r.{fmt}"
    path.write_bytes(body)
    assert probe_duration_s(path) == pytest.approx(7.0, abs=0.1)


def test_unknown_recording_is_404(server: RecordingServer) -> None:
    assert _get(server.url + "/exotelrecordings/A/missing", "key:token")[0] == 404
