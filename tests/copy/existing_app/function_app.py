"""An existing Functions app, as a user has it before copying the template in.

It is the kind of app the copy must not break: an ANONYMOUS default auth level, a
`health` function of its own, a `shared/` package of its own, and its own
Azure Monitor set-up at import.
"""

import os

import azure.functions as func
from azure.monitor.opentelemetry import configure_azure_monitor
from shared.greeting import greet

if os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
    configure_azure_monitor()

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("alive")


@app.route(route="hello", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(greet(req.params.get("name", "world")))
