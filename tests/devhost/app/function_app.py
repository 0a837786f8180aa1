"""A small FunctionApp for the local host's own tests (not the production app).

Queue message bodies steer the ``work`` function: ``fail`` raises, ``hold:<seconds>`` sleeps, anything else
succeeds. Every invocation is recorded in ``tests.devhost.probe.PROBE``.
"""

import time

import azure.functions as func

from tests.devhost.probe import PROBE

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _run(function: str, body: str, **details: object) -> None:
    PROBE.enter(function=function, body=body, **details)
    try:
        if body == "fail":
            raise RuntimeError("asked to fail")
        if body.startswith("hold:"):
            time.sleep(float(body.split(":", 1)[1]))
    finally:
        PROBE.leave()


@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="%WORK_QUEUE%-out", connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage, out: func.Out[str]) -> None:
    body = msg.get_body().decode("utf-8")
    _run(
        "work",
        body,
        id=msg.id,
        dequeue_count=msg.dequeue_count,
        pop_receipt=msg.pop_receipt,
        insertion_time=msg.insertion_time,
        expiration_time=msg.expiration_time,
        next_visible=msg.time_next_visible,
    )
    if body.startswith("echo:"):
        out.set(body[len("echo:") :])


@app.queue_trigger(arg_name="msg", queue_name="%OTHER_QUEUE%", connection="AzureWebJobsStorage")
async def other(msg: func.QueueMessage) -> None:
    PROBE.enter(function="other", body=msg.get_body().decode("utf-8"), dequeue_count=msg.dequeue_count)
    PROBE.leave()


# Named like a production worker function, so the *_WORKER_CONCURRENCY settings apply to it.
@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%-tr", connection="AzureWebJobsStorage")
def transcribe_recording(msg: func.QueueMessage) -> None:
    _run("transcribe_recording", msg.get_body().decode("utf-8"))


@app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%", run_on_startup=False, use_monitor=False)
def tick(timer: func.TimerRequest) -> None:
    _run("tick", "hold:2.5", past_due=timer.past_due)


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True, use_monitor=False)
def startup(timer: func.TimerRequest, context: func.Context) -> None:
    _run("startup", "", past_due=timer.past_due, invocation_id=context.invocation_id)


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=False, use_monitor=True)
def monitored(timer: func.TimerRequest) -> None:
    _run("monitored", "", past_due=timer.past_due)


@app.route(route="open", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def open_route(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("open", status_code=200, headers={"X-Test": "yes"}, mimetype="text/plain")


@app.route(route="items/{item_id}", methods=["GET", "POST"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    body = f'{{"id":"{req.route_params["item_id"]}","q":"{req.params.get("q", "")}","len":{len(req.get_body())}}}'
    return func.HttpResponse(body, status_code=201 if req.method == "POST" else 200, mimetype="application/json")


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin", status_code=200)


@app.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom")
