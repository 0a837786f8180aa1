"""Builds the WhatsApp worker's services from settings and the process's shared clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import requests

from shared.coordination.circuit import CircuitBreaker
from shared.coordination.ratelimit import SlotRateLimiter
from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.whatsapp.exotel import ExotelClient, ExotelConfig
from shared.whatsapp.handler import MetricsSink, WhatsAppServices

if TYPE_CHECKING:
    from redis import Redis

    from shared.store import Store

__all__ = ["LIMITER_NAME", "build_whatsapp_services", "status_callback_url"]

#: The shared budget's name: one Exotel account, one limiter and one circuit for every instance.
LIMITER_NAME = "exotel"


def status_callback_url(settings: Settings) -> str | None:
    """``<EXOTEL_STATUS_CALLBACK_URL>/<EXOTEL_CALLBACK_SECRET>``, or None when no callback URL is set."""
    if settings.exotel_status_callback_url is None:
        return None
    if settings.exotel_callback_secret is None:
        raise ConfigurationError("missing settings: EXOTEL_CALLBACK_SECRET must be set with EXOTEL_STATUS_CALLBACK_URL")
    return f"{settings.exotel_status_callback_url.rstrip('/')}/{settings.exotel_callback_secret.get_secret_value()}"


def build_whatsapp_services(
    settings: Settings, *, store: Store, redis: Redis, metrics: MetricsSink
) -> WhatsAppServices:
    """Exotel client (own ``requests.Session``), shared limiter and circuit, the store and metrics."""
    config = ExotelConfig.from_settings(settings, status_callback_url=status_callback_url(settings))
    limiter = SlotRateLimiter(
        redis, LIMITER_NAME, rate_per_s=settings.whatsapp_rate_per_s, max_wait_s=settings.whatsapp_max_wait_s,
        reserve=settings.whatsapp_priority_reserve,
    )
    # The probe is taken before the rate-limit wait, so its slot must outlast that wait plus the call.
    probe_ttl_s = (settings.whatsapp_max_wait_s + settings.exotel_connect_timeout_s
                   + settings.exotel_read_timeout_s + 5)
    circuit = CircuitBreaker(
        redis, LIMITER_NAME, failure_threshold=settings.circuit_failure_threshold,
        cooldown_s=settings.circuit_cooldown_s, probe_ttl_s=probe_ttl_s,
    )
    return WhatsAppServices(
        store=store, exotel=ExotelClient(requests.Session(), config), limiter=limiter, circuit=circuit,
        claim_s=float(settings.whatsapp_claim_stale_s), priority_threshold=settings.whatsapp_priority_threshold,
        metrics=metrics,
    )
