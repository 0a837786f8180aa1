"""Transcription worker trigger: one recording per message on the transcription queue."""

import azure.functions as func

from shared.deps import get_deps
from shared.transcription.handler import handle_transcription

__all__ = ["bp"]

bp = func.Blueprint()


@bp.function_name("transcribe_recording")
@bp.queue_trigger(arg_name="msg", queue_name="%TRANSCRIPTION_QUEUE_NAME%", connection="AzureWebJobsStorage")
def transcribe_recording(msg: func.QueueMessage) -> None:
    """Transcribe the call recording of one VOICE message ({messageId, threadId, audioUrl, callSid})."""
    deps = get_deps()
    deps.run_message(msg, kind="transcription", queue=deps.settings.transcription_queue_name,
                     handler=lambda job: handle_transcription(job, deps.transcription))
