"""Logic App stand-in: runs the workflow definition that infra/ deploys, against the stand-ins.

The definition is `infra/logic-app/workflow.json`, the file `infra/modules/logic-app.bicep`
loads with `loadJsonContent`. The stand-in reads it when the stack starts and refuses to
start (WorkflowError, naming the file and each element) on anything it does not implement.
It fills in the workflow parameters as the Bicep module does (`deployment_parameters`), runs
the Recurrence trigger on demand through the control API and, under `python -m devstack up`,
on its schedule, and keeps each run's record for the control API.

Modules: `definition` (the file to typed parts), `expressions` (the one expression function
used), `runner` (runs, tokens, the HTTP call, run records).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from devstack.appsettings import DEFAULT_TIMER_API_PATH
from devstack.logicapp.definition import Workflow, WorkflowError, load_workflow
from devstack.logicapp.runner import RunParameterError, WorkflowRunner, bind_parameters
from devstack.state import StackState

__all__ = ["WorkflowError", "WorkflowRunner", "add_control_routes", "deployment_parameters", "load_workflow",
           "runner_of", "start", "stop"]

# As infra/ names it (logic-<token>), for this stack.
WORKFLOW_NAME = "logic-devstack"
# The identity infra/ gives the workflow (main.bicep: callerIdentityId = the reader identity).
CALLER_IDENTITY = "reader"
_EXTRAS_KEY = "logicapp"


def deployment_parameters(state: StackState) -> dict[str, str]:
    """The workflow parameter values, as logic-app.bicep fills them in from main.bicep."""
    config = state.config
    caller = config.identities.get(CALLER_IDENTITY)
    if caller is None:
        raise WorkflowError([f"the devstack config has no '{CALLER_IDENTITY}' identity for the workflow to call with"])
    return {
        "apimBaseUrl": state.endpoints["apim_base_url"],
        "apiPath": DEFAULT_TIMER_API_PATH,
        "apiAppIdUri": config.api.app_id_uri,
        "callerIdentityId": caller.resource_id,
        "subscriptionKey": state.subscription_key,
    }


async def start(state: StackState, workflow: Workflow, *, schedule: bool) -> WorkflowRunner:
    """Start the runner for a running stack (its endpoints are known) and keep it in `state`."""
    try:
        parameters = bind_parameters(workflow, deployment_parameters(state))
    except RunParameterError as exc:
        raise WorkflowError([f"{workflow.file}: {exc}"]) from None
    runner = WorkflowRunner(workflow, parameters, name=WORKFLOW_NAME,
                            identity_endpoint=state.endpoints["identity_endpoint"],
                            identity_header=state.identity_header)
    await runner.start(schedule=schedule)
    state.extras[_EXTRAS_KEY] = runner
    return runner


async def stop(state: StackState) -> None:
    runner = state.extras.pop(_EXTRAS_KEY, None)
    if runner is not None:
        await runner.close()


def runner_of(state: StackState) -> WorkflowRunner | None:
    return state.extras.get(_EXTRAS_KEY)


# --- control API: GET /logicapp, POST /logicapp/run, GET /logicapp/runs ---------------------

def add_control_routes(app: web.Application, state: StackState) -> None:
    def runner() -> WorkflowRunner:
        found = runner_of(state)
        if found is None:
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": "the workflow runner is not running"}),
                                             content_type="application/json")
        return found

    async def describe(request: web.Request) -> web.Response:
        return web.json_response(runner().describe())

    async def run(request: web.Request) -> web.Response:
        """Run the trigger now ("Run trigger" in the portal) and answer with the run's record.
        An optional body {"parameters": {...}} replaces parameter values for this run only."""
        overrides: Any = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"error": "the body must be JSON: {\"parameters\": {...}}"}, status=400)
            overrides = body.get("parameters", {}) if isinstance(body, dict) else None
            if not isinstance(overrides, dict) or set(body) - {"parameters"}:
                return web.json_response({"error": "the body must be {\"parameters\": {name: value}}"}, status=400)
        try:
            record = await runner().run(fired_by="manual", parameters=overrides)
        except RunParameterError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(record)

    async def runs(request: web.Request) -> web.Response:
        return web.json_response(runner().runs())

    app.router.add_get("/logicapp", describe)
    app.router.add_post("/logicapp/run", run)
    app.router.add_get("/logicapp/runs", runs)


def forget_runs(state: StackState) -> None:
    """For the control API's reset."""
    found = runner_of(state)
    if found is not None:
        found.forget_runs()
