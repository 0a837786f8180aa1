"""WhatsApp processor triggers: the bulk and priority send queues, and Exotel's delivery-status callback."""

import azure.functions as func

from shared.coordination.ratelimit import Lane
from shared.deps import get_deps
from shared.whatsapp.callbacks import handle_status_callback
from shared.whatsapp.handler import handle_send

__all__ = ["bp"]

bp = func.Blueprint()


@bp.function_name("whatsapp_send")
@bp.queue_trigger(arg_name="msg", queue_name="%WHATSAPP_QUEUE_NAME%", connection="AzureWebJobsStorage")
def whatsapp_send(msg: func.QueueMessage) -> None:
    """Send one WhatsApp message from the bulk lane."""
    deps = get_deps()
    deps.run_message(msg, kind="whatsapp", queue=deps.settings.whatsapp_queue_name,
                     handler=lambda job: handle_send(job, deps.whatsapp, lane=Lane.BULK))


@bp.function_name("whatsapp_send_priority")
@bp.queue_trigger(arg_name="msg", queue_name="%WHATSAPP_PRIORITY_QUEUE_NAME%", connection="AzureWebJobsStorage")
def whatsapp_send_priority(msg: func.QueueMessage) -> None:
    """Send one WhatsApp message from the high-priority lane."""
    deps = get_deps()
    deps.run_message(msg, kind="whatsapp", queue=deps.settings.whatsapp_priority_queue_name,
                     handler=lambda job: handle_send(job, deps.whatsapp, lane=Lane.HIGH))


@bp.function_name("whatsapp_status_callback")
@bp.route(route="whatsapp/status/{secret}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def whatsapp_status_callback(req: func.HttpRequest) -> func.HttpResponse:
    """Exotel DLR callbacks; the secret path segment is the credential (Exotel sends no function key)."""
    deps = get_deps()
    secret = deps.settings.exotel_callback_secret
    answer = handle_status_callback(
        req.get_body(), given_secret=req.route_params.get("secret", ""),
        expected_secret=secret.get_secret_value() if secret else None,
        store=deps.store, redis=deps.redis, metrics=deps.metrics,
    )
    return func.HttpResponse(answer.json(), status_code=answer.status_code, mimetype="application/json")
