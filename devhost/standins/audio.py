"""Real audio generated locally with PyAV (no speech synthesiser, no network): tones and quiet noise.

Used by the recording stand-in, the tests and bench/. The signal alternates a 400 Hz tone (four seconds) with
one second of low-level noise, so encoders see changing content; generating it is far faster than real time.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import av

__all__ = ["generate_recording", "probe_duration_s"]

_CODECS = {"wav": ("wav", "pcm_s16le"), "mp3": ("mp3", "libmp3lame"), "ogg": ("ogg", "libopus"),
           "flac": ("flac", "flac")}


def _tone_second(rate: int) -> bytes:
    period = 20 if rate % 400 == 0 else rate // 400  # 400 Hz
    samples = [int(6000 * math.sin(2 * math.pi * k / period)) for k in range(period)]
    one = struct.pack(f"<{period}h", *samples)
    return (one * (rate // period + 1))[: 2 * rate]


def _noise_second(rate: int) -> bytes:
    buf = bytearray(2 * rate)
    buf[0::2] = os.urandom(rate)  # low byte random, high byte 0: quiet positive noise
    return bytes(buf)


def generate_recording(path: Path, duration_s: int, *, fmt: str = "wav", sample_rate: int = 8000,
                       bit_rate: int = 64_000) -> Path:
    """Write ``duration_s`` seconds of mono audio to ``path`` as ``wav``, ``mp3``, ``ogg`` (Opus) or ``flac``.

    Opus needs a sample rate of 8, 12, 16, 24 or 48 kHz.
    """
    container_format, codec = _CODECS[fmt]
    tone, noise = _tone_second(sample_rate), _noise_second(sample_rate)
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=sample_rate, layout="mono")
        if fmt in ("mp3", "ogg"):
            stream.bit_rate = bit_rate
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=sample_rate,
                                      frame_size=stream.frame_size or None)
        for second in range(duration_s):
            frame = av.AudioFrame(format="s16", layout="mono", samples=sample_rate)
            frame.planes[0].update(noise if second % 5 == 4 else tone)
            frame.sample_rate = sample_rate
            frame.pts = second * sample_rate
            for piece in resampler.resample(frame):
                out.mux(stream.encode(piece))
        for piece in resampler.resample(None):
            out.mux(stream.encode(piece))
        out.mux(stream.encode(None))
    return path


def probe_duration_s(path: Path) -> float:
    """Duration of an audio file: the container's figure, or by decoding when the container has none."""
    with av.open(str(path)) as container:
        if container.duration:
            return float(container.duration) / 1_000_000
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / float(stream.rate or 1)
