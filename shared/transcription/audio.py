"""Audio preparation with PyAV (its wheels carry FFmpeg): probe, transcode to compact speech audio, split.

- A recording that the API accepts as it is (a supported format, at most the upload limit, within the
  model's duration cap) is sent unchanged.
- Otherwise it is decoded and re-encoded in one streaming pass to **16 kHz mono MP3 at 32 kbit/s CBR**:
  4 KB per second, so an hour is 14.4 MB and one upload of 25 MiB holds ~109 minutes. MP3 is accepted by
  every OpenAI-compatible server (Opus in Ogg would be ~25 % smaller but its size is less predictable and
  some compatible servers refuse .ogg); CBR makes the size of a chunk exactly predictable.
- When the result would still be too big or too long, the same pass cuts it by *time* into equal chunks
  (never by bytes, which breaks containers). Offsets come from exact sample counts.

Memory stays flat: frames stream from the input file to the output files; nothing holds the whole
recording. A recording PyAV cannot open or decode raises ``AudioUnreadable`` (a ``Reject``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.transcription.errors import AudioUnreadable

__all__ = ["ACCEPTED_SUFFIXES", "MAX_UPLOAD_BYTES", "AudioInfo", "AudioLimits", "Chunk", "duration_cap_s",
           "prepare_audio", "probe_audio"]

log = logging.getLogger(__name__)

#: The API's request limit (26,214,400 bytes) less room for the multipart envelope and form fields.
MAX_UPLOAD_BYTES = 26_214_400 - 256 * 1024
ACCEPTED_SUFFIXES = frozenset({".flac", ".m4a", ".mp3", ".mp4", ".mpeg", ".mpga", ".oga", ".ogg", ".wav", ".webm"})
_OUT_RATE = 16_000
_OUT_BIT_RATE = 32_000
_PROBE_DECODE_S = 1.0


def duration_cap_s(model: str) -> float | None:
    """The longest audio a model accepts per request, less a small margin; None when only size limits it."""
    if "diarize" in model:
        return 1400.0 - 20.0
    if model.startswith(("gpt-4o", "gpt-transcribe")):
        return 1500.0 - 20.0
    return None


@dataclass(frozen=True)
class AudioLimits:
    """What one upload may be: at most ``max_upload_bytes`` and ``max_chunk_s`` seconds."""

    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_chunk_s: float | None = None

    @classmethod
    def for_model(cls, model: str) -> AudioLimits:
        """The limits of the 25 MiB API and the model's duration cap."""
        return cls(max_chunk_s=duration_cap_s(model))


@dataclass(frozen=True)
class AudioInfo:
    """What probing found."""

    duration_s: float
    format_name: str
    codec: str
    sample_rate: int
    channels: int
    size_bytes: int


@dataclass(frozen=True)
class Chunk:
    """One upload: a file and where it starts in the recording."""

    path: Path
    offset_s: float
    duration_s: float


def probe_audio(path: Path) -> AudioInfo:
    """Open ``path``, read its audio stream's properties and decode its first second.

    Raises ``AudioUnreadable`` naming the reason when it is not decodable audio.
    """
    import av  # FFmpeg's libraries load on first use, not at import (cold start)

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioUnreadable(f"recording has no audio stream (format {container.format.name})")
            stream = container.streams.audio[0]
            decoded = 0
            for frame in container.decode(stream):
                decoded += frame.samples
                if decoded >= _PROBE_DECODE_S * (stream.rate or 1):
                    break
            if decoded == 0:
                raise AudioUnreadable("recording contains no decodable audio frames")
            duration_s = _duration_s(container, stream)
            return AudioInfo(duration_s=duration_s, format_name=container.format.name, codec=stream.codec.name,
                             sample_rate=int(stream.rate or 0), channels=int(stream.channels or 0),
                             size_bytes=path.stat().st_size)
    except av.error.FFmpegError as exc:
        raise AudioUnreadable(f"recording is not decodable audio: {exc.strerror or exc}") from None


def _duration_s(container: Any, stream: Any) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration) / 1_000_000
    return 0.0  # unknown until decoded; prepare_audio transcodes and counts samples then


def prepare_audio(path: Path, work_dir: Path, limits: AudioLimits) -> list[Chunk]:
    """The uploads for ``path``: the file itself when the API accepts it, else transcoded (and split) chunks
    written into ``work_dir`` (the job's own directory). Raises ``AudioUnreadable``."""
    info = probe_audio(path)
    cap_s = limits.max_chunk_s
    fits = (info.size_bytes <= limits.max_upload_bytes and info.duration_s > 0
            and (cap_s is None or info.duration_s <= cap_s) and path.suffix.lower() in ACCEPTED_SUFFIXES)
    if fits:
        return [Chunk(path=path, offset_s=0.0, duration_s=info.duration_s)]
    chunk_s = _chunk_s(info.duration_s, limits)
    log.info("transcoding %.0f s of %s/%s (%d bytes) into chunks of up to %.0f s", info.duration_s,
             info.format_name, info.codec, info.size_bytes, chunk_s)
    return _transcode(path, work_dir, chunk_s)


def _chunk_s(duration_s: float, limits: AudioLimits) -> float:
    by_size_s = limits.max_upload_bytes * 8 / _OUT_BIT_RATE * 0.97  # headroom for frame and tag overhead
    longest_s = min(by_size_s, limits.max_chunk_s or by_size_s)
    if duration_s <= 0 or duration_s <= longest_s:
        return longest_s
    # Equal chunks rather than n-1 full ones and a short tail.
    return duration_s / math.ceil(duration_s / longest_s)


class _ChunkWriter:
    """Writes consecutive MP3 chunks of at most ``chunk_samples`` samples each."""

    def __init__(self, work_dir: Path, chunk_samples: int) -> None:
        self.work_dir, self.chunk_samples = work_dir, chunk_samples
        self.chunks: list[Chunk] = []
        self.total_samples = 0
        self._container: Any = None
        self._stream: Any = None
        self._samples = 0
        self._path: Path | None = None

    def write(self, frame: Any) -> None:
        if self._container is None:
            self._open()
        frame.pts = self._samples
        self._container.mux(self._stream.encode(frame))
        self._samples += frame.samples
        self.total_samples += frame.samples
        if self._samples >= self.chunk_samples:
            self.close()

    def _open(self) -> None:
        import av

        self._path = self.work_dir / f"chunk-{len(self.chunks):03d}.mp3"
        self._container = av.open(str(self._path), "w", format="mp3")
        # LAME's -q 7 ("fast, good quality" for speech at 32 kbit/s) encodes ~1.6x faster than its default.
        self._stream = self._container.add_stream("libmp3lame", rate=_OUT_RATE, layout="mono",
                                                  options={"compression_level": "7"})
        self._stream.bit_rate = _OUT_BIT_RATE
        self._samples = 0

    def close(self) -> None:
        if self._container is None:
            return
        self._container.mux(self._stream.encode(None))
        self._container.close()
        assert self._path is not None
        start = (self.total_samples - self._samples) / _OUT_RATE
        self.chunks.append(Chunk(path=self._path, offset_s=start, duration_s=self._samples / _OUT_RATE))
        self._container = None

    @property
    def frame_size(self) -> int:
        return 1152  # MP3 frame: the resampler hands the encoder whole frames


def _transcode(path: Path, work_dir: Path, chunk_s: float) -> list[Chunk]:
    import av

    writer = _ChunkWriter(work_dir, max(1, int(chunk_s * _OUT_RATE)))
    resampler = av.AudioResampler(format="s16p", layout="mono", rate=_OUT_RATE, frame_size=writer.frame_size)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                for piece in resampler.resample(frame):
                    writer.write(piece)
            for piece in resampler.resample(None):
                writer.write(piece)
        writer.close()
    except av.error.FFmpegError as exc:
        writer.close()
        raise AudioUnreadable(f"recording could not be decoded: {exc.strerror or exc}") from None
    if not writer.chunks or writer.total_samples == 0:
        raise AudioUnreadable("recording contains no decodable audio frames")
    return writer.chunks
