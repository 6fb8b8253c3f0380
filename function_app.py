"""Azure Functions app (Python v2 model): call an API behind APIM with a managed identity.

Only triggers live here; the logic is in `shared/`. Nothing at import time
touches the network or reads settings, so a bad setting never hides the
functions from the host: `health` reports it and calls fail with its name.
"""

import azure.functions as func

from shared import handlers

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="apim/{*path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def apim_proxy(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Forward to APIM_BASE_URL/{path} with the managed identity's token and the subscription key."""
    return await handlers.forward(req, context)


@app.route(route="health", methods=["GET"])
async def health(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Configuration status; `?probe=token` also shows the token's non-secret claims."""
    return await handlers.health(req, context)


@app.timer_trigger(schedule="%TIMER_SCHEDULE%", arg_name="timer", run_on_startup=False)
@app.retry(strategy="exponential_backoff", max_retry_count="3",
           minimum_interval="00:00:10", maximum_interval="00:02:00")
async def scheduled_api_call(timer: func.TimerRequest, context: func.Context) -> None:
    """Call GET TIMER_API_PATH on TIMER_SCHEDULE; a failed call fails the invocation."""
    await handlers.scheduled_call(timer, context)
