"""Peak memory (RSS) while processing a 200 MB recording, streaming vs reading it into memory; transcode speed.

Run: ``.venv/bin/python bench/transcription_memory.py [--mb 200]``. Each mode runs in a fresh child process
that reports its own peak RSS (``ru_maxrss``), so the modes do not share a high-water mark:

- ``streaming``: our path — ``download_recording`` from the recording stand-in (another process) into a
  per-job temp file, then ``prepare_audio`` (PyAV transcode to 16 kHz mono MP3 and split);
- ``in_memory``: the original worker's approach — the whole body read into memory (``requests``' ``.content``,
  as axios ``arraybuffer``), then decoded by PyAV from that buffer, transcoded the same way.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _child(mode: str, url: str, work: Path) -> dict[str, float]:
    from shared.settings import Settings
    from shared.transcription.audio import AudioLimits, prepare_audio, probe_audio
    from shared.transcription.download import Credentials, DownloadLimits, download_recording
    from shared.transcription.urlpolicy import UrlPolicy

    creds = Credentials("key", "token")
    started = time.perf_counter()
    if mode == "streaming":
        policy = UrlPolicy.from_settings(Settings.from_env({"RECORDING_ALLOW_HTTP_HOSTS": "127.0.0.1"}))
        got = download_recording(url, work, policy=policy, limits=DownloadLimits(max_bytes=1 << 31),
                                 credentials=creds)
        downloaded = time.perf_counter()
        duration_s = probe_audio(got.path).duration_s
        t0 = time.perf_counter()
        prepare_audio(got.path, work, AudioLimits())
        transcode_s = time.perf_counter() - t0
    else:
        import av
        import requests

        body = requests.get(url, auth=(creds.username, creds.password), timeout=60).content
        downloaded = time.perf_counter()
        t0 = time.perf_counter()
        out = io.BytesIO()
        with av.open(io.BytesIO(body)) as source, av.open(out, "w", format="mp3") as sink:
            stream = sink.add_stream("libmp3lame", rate=16000, layout="mono", options={"compression_level": "7"})
            stream.bit_rate = 32000
            resampler = av.AudioResampler(format="s16p", layout="mono", rate=16000, frame_size=1152)
            samples = 0
            for frame in source.decode(audio=0):
                for piece in resampler.resample(frame):
                    piece.pts = samples
                    samples += piece.samples
                    sink.mux(stream.encode(piece))
            sink.mux(stream.encode(None))
        duration_s = samples / 16000
        transcode_s = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_mb": peak_kib / 1024, "download_s": downloaded - started, "transcode_s": transcode_s,
            "audio_s": duration_s, "speed_x_realtime": duration_s / transcode_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "URL", "DIR"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], Path(args.child[2]))))
        return
    from devhost.standins.audio import generate_recording

    with tempfile.TemporaryDirectory() as tmp:
        seconds = args.mb * 1_000_000 // 32_000  # 16 kHz 16-bit mono wav: 32,000 bytes a second
        source = generate_recording(Path(tmp) / "big.wav", seconds, sample_rate=16000)
        size_mb = source.stat().st_size / 1e6
        server = subprocess.Popen(
            [sys.executable, "-c", (
                "import sys; sys.path.insert(0, sys.argv[1]);"
                "from pathlib import Path; from devhost.standins.recordings import RecordingServer;"
                "s = RecordingServer(0, user='key', password='token'); s.add_file('/big.wav', Path(sys.argv[2]));"
                "print(s.server_address[1], flush=True); s.serve_forever()"), str(ROOT), str(source)],
            stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            url = f"http://127.0.0.1:{port}/big.wav"
            results = {}
            for mode in ("streaming", "in_memory"):
                with tempfile.TemporaryDirectory(dir=tmp) as work:
                    out = subprocess.run([sys.executable, __file__, "--child", mode, url, work],
                                         capture_output=True, text=True, check=True)
                    results[mode] = json.loads(out.stdout)
        finally:
            server.terminate()
            server.wait()
    print(f"recording: {size_mb:.0f} MB wav, {seconds / 60:.0f} min of 16 kHz mono audio")
    for mode, figures in results.items():
        print(f"{mode:10s} peak RSS {figures['peak_rss_mb']:7.1f} MB  download {figures['download_s']:5.1f} s  "
              f"transcode {figures['transcode_s']:5.1f} s = {figures['speed_x_realtime']:5.0f}x real time")


if __name__ == "__main__":
    main()
