"""Email poller triggers: the timer fan-out and the ``email-processing`` queue (one inbox per job)."""

import azure.functions as func

from shared.deps import get_deps
from shared.mailbox.handlers import handle_email_job, handle_schedule_polls

__all__ = ["bp"]

bp = func.Blueprint()


@bp.function_name("email_schedule_polls")
@bp.timer_trigger(schedule="%EMAIL_POLL_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=False)
def email_schedule_polls(timer: func.TimerRequest) -> None:
    """Enqueue one POLL_INBOX job per due account that is not already being polled."""
    handle_schedule_polls(get_deps())


@bp.function_name("email_poll_inbox")
@bp.queue_trigger(arg_name="msg", queue_name="%EMAIL_QUEUE_NAME%", connection="AzureWebJobsStorage")
def email_poll_inbox(msg: func.QueueMessage) -> None:
    """Poll one inbox (POLL_INBOX) or fan out now (POLL_ALL_INBOXES)."""
    deps = get_deps()
    deps.run_message(msg, kind="email", queue=deps.settings.email_queue_name,
                     handler=lambda job: handle_email_job(job, deps))
