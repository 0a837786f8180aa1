"""Audio preparation: pass-through when acceptable, compact transcoding, time-based chunks, clear rejections."""

from __future__ import annotations

from pathlib import Path

import pytest

from devhost.standins.audio import generate_recording, probe_duration_s
from shared.transcription.audio import AudioLimits, duration_cap_s, prepare_audio, probe_audio
from shared.transcription.errors import AudioUnreadable


def test_an_acceptable_recording_is_sent_unchanged(tmp_path: Path) -> None:
    source = generate_recording(tmp_path / "a.mp3", 30, fmt="mp3")
    chunks = prepare_audio(source, tmp_path, AudioLimits())
    assert [(c.path, c.offset_s) for c in chunks] == [(source, 0.0)]
    assert list(tmp_path.iterdir()) == [source]


def test_over_the_size_limit_it_is_transcoded_to_16_khz_mono_mp3(tmp_path: Path) -> None:
    source = generate_recording(tmp_path / "a.wav", 120)  # 1.9 MB
    chunks = prepare_audio(source, tmp_path, AudioLimits(max_upload_bytes=1_000_000))
    assert len(chunks) == 1
    info = probe_audio(chunks[0].path)
    assert (info.format_name, info.sample_rate, info.channels) == ("mp3", 16000, 1)
    assert chunks[0].path.stat().st_size < 1_000_000
    assert probe_duration_s(chunks[0].path) == pytest.approx(120, abs=0.2)


def test_still_too_big_it_is_split_by_time_into_equal_chunks_with_exact_offsets(tmp_path: Path) -> None:
    source = generate_recording(tmp_path / "a.wav", 300)
    chunks = prepare_audio(source, tmp_path, AudioLimits(max_upload_bytes=400_000))  # ~97 s of 32 kbit/s
    assert len(chunks) == 4
    assert [round(c.offset_s) for c in chunks] == [0, 75, 150, 225]
    assert sum(c.duration_s for c in chunks) == pytest.approx(300, abs=0.1)
    assert all(c.path.stat().st_size < 400_000 for c in chunks)


def test_over_the_models_duration_cap_it_is_split(tmp_path: Path) -> None:
    source = generate_recording(tmp_path / "a.mp3", 100, fmt="mp3")
    chunks = prepare_audio(source, tmp_path, AudioLimits(max_chunk_s=40))
    assert len(chunks) == 3
    assert all(c.duration_s <= 40 for c in chunks)
    assert duration_cap_s("gpt-4o-transcribe") == 1480
    assert duration_cap_s("gpt-4o-transcribe-diarize") == 1380
    assert duration_cap_s("whisper-1") is None


def test_a_format_the_api_refuses_is_transcoded(tmp_path: Path) -> None:
    source = generate_recording(tmp_path / "a.wav", 10)
    renamed = source.rename(tmp_path / "a.bin")
    chunks = prepare_audio(renamed, tmp_path, AudioLimits())
    assert chunks[0].path.suffix == ".mp3"


@pytest.mark.parametrize("content", [b"", b"not audio at all" * 100, b"ID3\x03\x00\x00\x00" + bytes(range(256)) * 50])
def test_corrupt_files_are_rejected_with_the_reason(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.mp3"
    path.write_bytes(content)
    with pytest.raises(AudioUnreadable, match=r"decodable audio|no audio stream"):
        prepare_audio(path, tmp_path, AudioLimits())
