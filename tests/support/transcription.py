"""Pytest plugin: the recording-server and OpenAI stand-ins, started in-process on free ports, and audio files.

Register with ``pytest_plugins = [..., "tests.support.transcription"]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.standins.audio import generate_recording
from devhost.standins.openai import OpenAIServer, running_openai_server
from devhost.standins.recordings import RecordingServer, running_recording_server

__all__ = ["audio_dir", "openai_server", "recording_server", "sixty_minute_wav"]

RECORDING_USER = "exotel-key"
# Not "exotel-token": that is the Key Vault secret *name* scripts print, and the session secret scan
# (tests.support.secret_scan) would rightly flag a setting value that appears in their output.
RECORDING_PASSWORD = "exotel-token-for-tests"
OPENAI_KEY = "sk-standin"


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    """A recording server requiring Basic auth ``RECORDING_USER:RECORDING_PASSWORD``, on a free loopback port."""
    with running_recording_server(user=RECORDING_USER, password=RECORDING_PASSWORD) as server:
        yield server


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """An OpenAI-compatible transcription server (API key ``sk-standin``) on a free loopback port."""
    with running_openai_server(api_key=OPENAI_KEY) as server:
        yield server


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide directory of generated audio files."""
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def sixty_minute_wav(audio_dir: Path) -> Path:
    """A 60-minute, 8 kHz mono wav (57.6 MB: above the 25 MiB API limit), generated once per session."""
    path = audio_dir / "sixty-minutes.wav"
    if not path.exists():
        generate_recording(path, 3600, fmt="wav", sample_rate=8000)
    return path
