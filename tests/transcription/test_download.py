"""The recording download refuses unsafe URLs with a clear reason and streams safely to a per-job file."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from devhost.standins.audio import probe_duration_s
from devhost.standins.recordings import FIVE_GB, RecordingServer
from shared.settings import Settings
from shared.transcription.download import Credentials, DownloadLimits, download_recording
from shared.transcription.errors import (
    RecordingAccessDenied,
    RecordingNotReady,
    RecordingTooLarge,
    RecordingUnavailable,
    UnsafeRecordingUrl,
)
from shared.transcription.urlpolicy import UrlPolicy, system_resolver
from tests.support.transcription import RECORDING_PASSWORD, RECORDING_USER

GOOD = Credentials(RECORDING_USER, RECORDING_PASSWORD)
LIMITS = DownloadLimits(max_bytes=20 * 1024 * 1024, connect_timeout_s=2, read_timeout_s=5, deadline_s=30)


def policy(allowed: str = "", http: str = "127.0.0.1") -> UrlPolicy:
    return UrlPolicy.from_settings(Settings.from_env({"RECORDING_ALLOWED_HOSTS": allowed or "recordings.exotel.com",
                                                      "RECORDING_ALLOW_HTTP_HOSTS": http}))


def fetch(url: str, directory: Path, *, pol: UrlPolicy | None = None, creds: Credentials | None = GOOD,
          limits: DownloadLimits = LIMITS,
          resolve: Callable[[str, int], Sequence[str]] = system_resolver) -> Path:
    return download_recording(url, directory, policy=pol or policy(), limits=limits, credentials=creds,
                              resolve=resolve).path


def test_authenticated_download_streams_real_audio_into_the_job_directory(
    recording_server: RecordingServer, tmp_path: Path
) -> None:
    path = fetch(recording_server.recording_url("call-1", duration_s=12), tmp_path)

    assert path.parent == tmp_path
    assert path.suffix == ".wav"
    assert probe_duration_s(path) == pytest.approx(12.0, abs=0.1)


def test_download_without_credentials_is_refused_as_exotel_refuses_it(
    recording_server: RecordingServer, tmp_path: Path
) -> None:
    with pytest.raises(RecordingAccessDenied, match=r"refused access \(401\).*EXOTEL_API_KEY"):
        fetch(recording_server.recording_url("call-1"), tmp_path, creds=None)
    assert list(tmp_path.iterdir()) == []


def test_wrong_credentials_are_refused(recording_server: RecordingServer, tmp_path: Path) -> None:
    with pytest.raises(RecordingAccessDenied, match="401"):
        fetch(recording_server.recording_url("call-1"), tmp_path, creds=Credentials(RECORDING_USER, "wrong"))


def test_host_not_on_the_allow_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeRecordingUrl, match=r"'evil\.example' is not in RECORDING_ALLOWED_HOSTS"):
        fetch("https://evil.example/x.mp3", tmp_path)


def test_cloud_metadata_address_is_refused_even_when_allow_listed(tmp_path: Path) -> None:
    with pytest.raises(UnsafeRecordingUrl, match=r"'169\.254\.169\.254' is not in RECORDING_ALLOWED_HOSTS"):
        fetch("http://169.254.169.254/latest/meta-data/", tmp_path)
    with pytest.raises(UnsafeRecordingUrl, match="plain http"):
        fetch("http://169.254.169.254/", tmp_path, pol=policy("169.254.169.254"))
    with pytest.raises(UnsafeRecordingUrl, match=r"169\.254\.169\.254, a link-local \(cloud metadata\) address"):
        fetch("https://169.254.169.254/", tmp_path, pol=policy("169.254.169.254"))


def test_localhost_is_refused(recording_server: RecordingServer, tmp_path: Path) -> None:
    port = recording_server.server_address[1]
    with pytest.raises(UnsafeRecordingUrl, match="'localhost' is not in RECORDING_ALLOWED_HOSTS"):
        fetch(f"http://localhost:{port}/exotelrecordings/A/x.wav", tmp_path)
    with pytest.raises(UnsafeRecordingUrl, match="a loopback address"):
        fetch(f"https://localhost:{port}/x.wav", tmp_path, pol=policy("localhost", http=""))


def test_a_name_resolving_to_a_private_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeRecordingUrl, match=r"resolves to 10\.0\.0\.7, a private address"):
        fetch("https://recordings.exotel.com/x.mp3", tmp_path, resolve=lambda _host, _port: ["10.0.0.7"])
    with pytest.raises(UnsafeRecordingUrl, match="a private address"):
        # One bad address in the answer refuses the name: we never pick "the good one".
        fetch("https://recordings.exotel.com/x.mp3", tmp_path,
              resolve=lambda _host, _port: ["52.1.2.3", "192.168.1.5"])


def test_redirect_to_a_private_address_is_refused(recording_server: RecordingServer, tmp_path: Path) -> None:
    url = f"{recording_server.url}/redirect?to=https://recordings.exotel.com/x.mp3"
    resolver = {"127.0.0.1": ["127.0.0.1"], "recordings.exotel.com": ["172.16.0.9"]}
    with pytest.raises(UnsafeRecordingUrl, match=r"resolves to 172\.16\.0\.9, a private address"):
        fetch(url, tmp_path, resolve=lambda host, _port: resolver[host])


def test_redirect_to_the_metadata_endpoint_is_refused(recording_server: RecordingServer, tmp_path: Path) -> None:
    url = f"{recording_server.url}/redirect?to=http://169.254.169.254/latest/meta-data/"
    with pytest.raises(UnsafeRecordingUrl, match=r"169\.254\.169\.254' is not in RECORDING_ALLOWED_HOSTS"):
        fetch(url, tmp_path)


def test_connection_goes_to_the_checked_address_not_a_second_lookup(
    recording_server: RecordingServer, tmp_path: Path
) -> None:
    # "recordings.test" exists in no DNS: the download can only work by connecting to the address we checked.
    port = recording_server.server_address[1]
    lookups: list[str] = []

    def resolve(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    url = f"http://recordings.test:{port}/exotelrecordings/A/pinned.wav?duration_s=2"
    path = fetch(url, tmp_path, pol=policy(http="recordings.test"), resolve=resolve)

    assert lookups == ["recordings.test"]
    assert recording_server.requests[-1]["host"] == f"recordings.test:{port}"
    assert probe_duration_s(path) == pytest.approx(2.0, abs=0.1)


def test_credentials_are_not_sent_to_a_redirect_on_another_origin(
    recording_server: RecordingServer, tmp_path: Path
) -> None:
    port = recording_server.server_address[1]
    target = f"http://recordings.test:{port}/exotelrecordings/A/x.wav"
    url = f"{recording_server.url}/redirect?to={target}"
    with pytest.raises(RecordingAccessDenied, match="401"):
        fetch(url, tmp_path, pol=policy(http="127.0.0.1,recordings.test"),
              resolve=lambda _host, _port: ["127.0.0.1"])
    assert [r["authorised"] for r in recording_server.requests] == [True, False]


def test_a_redirect_loop_is_refused(recording_server: RecordingServer, tmp_path: Path) -> None:
    url = recording_server.url + "/redirect"
    with pytest.raises(UnsafeRecordingUrl, match="more than 5 redirects"):
        fetch(url, tmp_path)


def test_a_5_gb_body_is_refused_by_content_length_without_reading_it(
    recording_server: RecordingServer, tmp_path: Path
) -> None:
    with pytest.raises(RecordingTooLarge, match=f"is {FIVE_GB} bytes \\(Content-Length\\).*RECORDING_MAX_BYTES"):
        fetch(recording_server.url + "/huge", tmp_path)
    time.sleep(0.2)
    assert recording_server.bytes_sent.get("huge", 0) < 64 * 1024 * 1024
    assert list(tmp_path.iterdir()) == []


def test_an_endless_body_without_length_is_stopped_at_the_cap_and_removed(
    recording_server: RecordingServer, tmp_path: Path
) -> None:
    limits = DownloadLimits(max_bytes=2 * 1024 * 1024, connect_timeout_s=2, read_timeout_s=5)
    with pytest.raises(RecordingTooLarge, match=r"exceeded 2097152 bytes .* while streaming"):
        fetch(recording_server.url + "/endless", tmp_path, limits=limits)
    time.sleep(0.2)
    assert recording_server.bytes_sent.get("endless", 0) < 64 * 1024 * 1024
    assert list(tmp_path.iterdir()) == []


def test_not_yet_published_recording_is_retried_later(recording_server: RecordingServer, tmp_path: Path) -> None:
    with pytest.raises(RecordingNotReady) as caught:
        fetch(recording_server.url + "/nothing-here.mp3", tmp_path)
    assert caught.value.retry_after_s == 120.0


def test_server_errors_are_retried_later_honouring_retry_after(
    recording_server: RecordingServer, tmp_path: Path
) -> None:
    with pytest.raises(RecordingUnavailable, match="503") as caught:
        fetch(recording_server.url + "/status/503?retry_after=7", tmp_path)
    assert caught.value.retry_after_s == 7.0


def test_unreachable_host_is_retried_later(tmp_path: Path) -> None:
    with pytest.raises(RecordingUnavailable, match="unreachable"):
        fetch("http://127.0.0.1:9/x.wav", tmp_path)


def test_url_credentials_and_query_are_never_logged(
    recording_server: RecordingServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = recording_server.server_address[1]
    url = (f"http://{RECORDING_USER}:{RECORDING_PASSWORD}@127.0.0.1:{port}/redirect"
           "?to=/exotelrecordings/A/x.wav%3Fduration_s%3D1%26Signature%3DSIGSECRET")
    fetch(url, tmp_path, creds=None)  # credentials in the URL are used ...
    with pytest.raises(RecordingAccessDenied) as caught:
        fetch(url.replace(RECORDING_PASSWORD, "PWSECRET"), tmp_path, creds=None)

    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("devhost"))
    for text in (ours, str(caught.value)):  # ... and never shown, by us or by urllib3
        assert RECORDING_PASSWORD not in text
        assert "PWSECRET" not in text
        assert "SIGSECRET" not in text
    assert "/exotelrecordings/A/x.wav" in ours


def test_the_query_is_not_logged_when_log_redaction_has_merged_the_arguments(
    recording_server: RecordingServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.redaction import install_log_redaction, uninstall_log_redaction

    caplog.set_level(logging.DEBUG)
    port = recording_server.server_address[1]
    url = (f"http://127.0.0.1:{port}/redirect"
           "?to=/exotelrecordings/A/x.wav%3Fduration_s%3D1%26Signature%3DSIGSECRET")
    install_log_redaction([])  # as the app does at start: records arrive with their arguments merged
    try:
        fetch(url, tmp_path)
    finally:
        uninstall_log_redaction()
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("devhost"))
    assert "/exotelrecordings/A/x.wav" in logged
    assert "SIGSECRET" not in logged
