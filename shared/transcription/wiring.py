"""Builds the transcription worker's services from settings and the process's shared clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.coordination.semaphore import Semaphore
from shared.settings import Settings
from shared.transcription.audio import AudioLimits
from shared.transcription.download import Credentials, DownloadLimits
from shared.transcription.handler import REDIS_LEASE_S, MetricsSink, TranscriptionServices
from shared.transcription.openai_client import Transcriber, build_openai_client
from shared.transcription.urlpolicy import UrlPolicy

if TYPE_CHECKING:
    from redis import Redis

    from shared.store import Store

__all__ = ["SLOTS_NAME", "build_transcription_services"]

#: The global cap's name: one OpenAI quota, one semaphore for every instance.
SLOTS_NAME = "transcription"


def build_transcription_services(
    settings: Settings, *, store: Store, redis: Redis, metrics: MetricsSink
) -> TranscriptionServices:
    """OpenAI client and transcriber, the global semaphore, download policy and limits, store and metrics."""
    return TranscriptionServices(
        store=store,
        redis=redis,
        slots=Semaphore(redis, SLOTS_NAME, limit=settings.transcription_max_in_flight, lease_s=REDIS_LEASE_S),
        transcriber=Transcriber.from_settings(build_openai_client(settings), settings),
        url_policy=UrlPolicy.from_settings(settings),
        download_limits=DownloadLimits.from_settings(settings),
        credentials=Credentials.from_settings(settings),
        audio_limits=AudioLimits.for_model(settings.transcription_model),
        max_attempts=settings.job_max_attempts,
        max_age_s=settings.job_max_age_s,
        metrics=metrics,
    )
