"""Ops endpoints, enabled in every app: liveness (anonymous, reveals nothing)."""

import azure.functions as func

__all__ = ["bp"]

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness: the worker process answers. Says nothing about settings, versions or dependencies."""
    return func.HttpResponse('{"status":"ok"}', status_code=200, mimetype="application/json")
