"""Ops endpoints, enabled in every app: liveness (anonymous, reveals nothing), readiness and metrics (keyed)."""

import json

import azure.functions as func

from shared.deps import get_deps

__all__ = ["bp"]

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness: the worker process answers. Says nothing about settings, versions or dependencies."""
    return func.HttpResponse('{"status":"ok"}', status_code=200, mimetype="application/json")


@bp.function_name("health_ready")
@bp.route(route="health/ready", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_ready(req: func.HttpRequest) -> func.HttpResponse:
    """Readiness: Redis, the storage queues and the database with timings; 503 when one is down."""
    from shared.ops.health import readiness

    status, body = readiness(get_deps())
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@bp.function_name("metrics")
@bp.route(route="metrics", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def metrics(req: func.HttpRequest) -> func.HttpResponse:
    """Prometheus text exposition, aggregated over every instance (Redis) and read from the queues."""
    from shared.ops.exposition import CONTENT_TYPE, render_metrics

    return func.HttpResponse(render_metrics(get_deps()), status_code=200, headers={"Content-Type": CONTENT_TYPE})
