"""The Logic App workflow that infra/ deploys, run by the devstack against the stand-ins."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from devstack import DevStack, logicapp
from devstack.config import load_config
from devstack.logicapp.definition import WorkflowError, load_workflow
from devstack.logicapp.expressions import ExpressionError, ParameterRef, compile_value
from devstack.logicapp.runner import MAX_RECORDED_BODY, RunParameterError, WorkflowRunner, bind_parameters
from tests.plugin import SAMPLE_BACKEND

DEPLOYED = load_config().logic_app_workflow
ACTION = "Call_Orders_API"
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


def run(control: Any, **parameters: str) -> dict[str, Any]:
    return control._call("POST", "/logicapp/run", {"parameters": parameters} if parameters else None)


def write_definition(tmp_path: Path, change: Any) -> Path:
    """A copy of the deployed definition with `change(definition)` applied."""
    definition = json.loads(DEPLOYED.read_text(encoding="utf-8"))
    change(definition)
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(definition), encoding="utf-8")
    return path


def action_of(definition: dict[str, Any]) -> dict[str, Any]:
    return definition["actions"][ACTION]


# --- runs against the stand-ins ------------------------------------------------------------

def test_a_run_calls_the_api_through_apim_as_the_reader(control, endpoints):
    record = run(control)
    assert record["status"] == "Succeeded", record
    action = record["actions"][ACTION]
    assert (action["status"], action["status_code"], action["code"]) == ("Succeeded", 200, "OK")
    assert action["duration_ms"] >= 0 and record["duration_ms"] >= action["duration_ms"]
    assert action["outputs"]["body"]["caller"] == endpoints["identities"]["reader"]["client_id"]
    # APIM let the token through (audience and tenant checked) and forwarded its caller and roles.
    [received] = control.backend_requests()
    assert (received["method"], received["path"]) == ("GET", f"{SAMPLE_BACKEND}/status")
    sent = {k.lower(): v for k, v in received["headers"].items()}
    assert sent["x-caller-client-id"] == endpoints["identities"]["reader"]["client_id"]
    assert sent["x-caller-roles"] == endpoints["api_roles"]["read"]
    assert control.stats()["apim"]["by_status"] == {"200": 1}
    assert control.stats()["identity"]["by_endpoint"] == {"app_service": 1}
    assert control._call("GET", "/logicapp/runs") == [record]


@pytest.mark.parametrize("identity", ["reader", "SystemAssigned"])
async def test_the_token_is_requested_as_logic_apps_standard_requests_it(devstack, identity):
    """App Service's managed-identity protocol: the audience as `resource`, exactly as written,
    a user-assigned identity by its resource ID (`mi_res_id`), the secret header."""
    seen: list[web.Request] = []

    async def identity_endpoint(request: web.Request) -> web.Response:
        seen.append(request)
        # An endpoint that quotes the secret header back must not put it in the record.
        return web.json_response({"statusCode": 400, "message": f"refused {request.headers['X-IDENTITY-HEADER']}"},
                                 status=400)

    app = web.Application()
    app.router.add_get("/msi/token", identity_endpoint)
    async with TestServer(app, host="127.0.0.1") as server:
        parameters = logicapp.deployment_parameters(devstack.state)
        if identity == "SystemAssigned":
            parameters["callerIdentityId"] = "SystemAssigned"
        runner = WorkflowRunner(load_workflow(DEPLOYED), parameters, name="probe",
                                identity_endpoint=str(server.make_url("/msi/token")), identity_header="the-header")
        await runner.start(schedule=False)
        try:
            record = await runner.run()
        finally:
            await runner.close()
    [request] = seen
    expected = {"api-version": "2019-08-01", "resource": devstack.state.config.api.app_id_uri}
    if identity == "reader":
        expected["mi_res_id"] = devstack.state.config.identities["reader"].resource_id
    assert dict(request.query) == expected
    assert request.headers["X-IDENTITY-HEADER"] == "the-header"
    answer = record["actions"][ACTION]["error"]["identity_endpoint_answer"]
    assert answer == {"statusCode": 400, "message": "refused [redacted]"}


def test_an_identity_without_the_read_role_fails_the_run_with_apims_answer(control, endpoints):
    record = run(control, callerIdentityId=endpoints["identities"]["writer"]["resource_id"])
    assert record["status"] == "Failed"
    assert record["error"]["code"] == "ActionFailed"
    action = record["actions"][ACTION]
    assert (action["status"], action["status_code"], action["code"]) == ("Failed", 403, "Forbidden")
    assert action["outputs"]["body"]["statusCode"] == 403
    assert endpoints["api_roles"]["read"] in action["outputs"]["body"]["message"]
    assert control.backend_requests() == []


def test_a_wrong_audience_fails_the_run_with_apims_answer(control):
    record = run(control, apiAppIdUri="https://management.azure.com/")
    action = record["actions"][ACTION]
    assert (record["status"], action["status_code"], action["code"]) == ("Failed", 401, "Unauthorized")
    assert action["outputs"]["body"] == {"statusCode": 401,
                                         "message": "Unauthorized. Access token is missing or invalid."}
    assert control.backend_requests() == []


@pytest.mark.parametrize(("parameter", "value"), [
    ("apiAppIdUri", "api://not-an-app-in-this-tenant"),
    ("callerIdentityId", "unassigned"),
], ids=["unknown audience", "identity without any app role"])
def test_no_token_fails_the_run_with_the_identity_endpoints_answer(control, endpoints, parameter, value):
    if parameter == "callerIdentityId":
        value = endpoints["identities"][value]["resource_id"]
    record = run(control, **{parameter: value})
    action = record["actions"][ACTION]
    assert (record["status"], action["status"], action["status_code"]) == ("Failed", "Failed", None)
    assert action["code"] == "ManagedIdentityTokenFailure"
    # Entra's refusal, as App Service's identity endpoint passes it on (one vague 500).
    answer = action["error"]["identity_endpoint_answer"]
    assert answer["statusCode"] == 500 and "fetching the AAD Token" in answer["message"]
    assert control.stats().get("apim", {}).get("requests", 0) == 0


def test_an_identity_not_assigned_to_the_workflow_fails_the_run(control):
    record = run(control, callerIdentityId="/subscriptions/x/resourceGroups/y/providers/"
                                           "Microsoft.ManagedIdentity/userAssignedIdentities/nobody")
    answer = record["actions"][ACTION]["error"]["identity_endpoint_answer"]
    assert answer["statusCode"] == 400 and "No User Assigned" in answer["message"]


def test_run_parameters_must_be_declared_strings(control):
    for body in ({"parameters": {"nope": "x"}}, {"parameters": {"apiPath": 3}}, {"other": 1}, [1]):
        with pytest.raises(Exception, match="400"):
            control._call("POST", "/logicapp/run", body)
    assert control._call("GET", "/logicapp/runs") == []


def test_reset_forgets_the_runs(control):
    run(control)
    control.reset()
    assert control._call("GET", "/logicapp/runs") == []


# --- secrets ---------------------------------------------------------------------------------

def _assert_no_secret(text: str, key: str) -> None:
    assert key not in text
    assert not JWT.search(text), "a token in the text"


def test_key_and_token_appear_in_no_run_record_log_line_or_telemetry(control, endpoints, caplog):
    caplog.set_level(logging.DEBUG)
    key = endpoints["subscription_key"]
    records = [run(control), run(control, callerIdentityId=endpoints["identities"]["writer"]["resource_id"]),
               run(control, apiAppIdUri="https://management.azure.com/"),
               run(control, subscriptionKey="not-the-key-" + "x" * 20)]
    assert [r["status"] for r in records] == ["Succeeded", "Failed", "Failed", "Failed"]
    assert records[-1]["actions"][ACTION]["status_code"] == 401  # APIM: invalid subscription key
    assert "not-the-key-" not in json.dumps(records)  # a securestring given for one run is secret too
    for document in (records, control._call("GET", "/logicapp/runs"), control._call("GET", "/logicapp"),
                     control.telemetry()):
        _assert_no_secret(json.dumps(document), key)
        assert endpoints["identity_header"] not in json.dumps(document)
    assert "workflow logic-devstack run" in caplog.text
    _assert_no_secret(caplog.text, key)
    assert endpoints["identity_header"] not in caplog.text


async def test_without_secure_inputs_the_record_shows_inputs_but_no_secret(devstack, endpoints, tmp_path):
    path = write_definition(tmp_path, lambda d: action_of(d).pop("runtimeConfiguration"))
    runner = WorkflowRunner(load_workflow(path), logicapp.deployment_parameters(devstack.state), name="open",
                            identity_endpoint=endpoints["identity_endpoint"],
                            identity_header=devstack.state.identity_header)

    async def one_run() -> dict[str, Any]:
        await runner.start(schedule=False)
        try:
            return await runner.run()
        finally:
            await runner.close()

    record = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(one_run(), devstack._loop))
    inputs = record["actions"][ACTION]["inputs"]
    assert inputs["uri"] == endpoints["apim_base_url"] + "/status"
    assert inputs["headers"] == {"Ocp-Apim-Subscription-Key": "[securestring]"}  # and no Authorization
    assert inputs["authentication"]["audience"] == endpoints["api_app_id_uri"]
    _assert_no_secret(json.dumps(record), endpoints["subscription_key"])


async def _run_against(devstack: Any, app: web.Application, path: str) -> dict[str, Any]:
    """One run of the deployed definition, with apimBaseUrl pointed at `app` instead of APIM."""
    async with TestServer(app, host="127.0.0.1") as server:
        parameters = {**logicapp.deployment_parameters(devstack.state),
                      "apimBaseUrl": str(server.make_url("")).rstrip("/"), "apiPath": path}
        runner = WorkflowRunner(load_workflow(DEPLOYED), parameters, name="probe",
                                identity_endpoint=devstack.endpoints["identity_endpoint"],
                                identity_header=devstack.state.identity_header)
        await runner.start(schedule=False)
        try:
            return await runner.run()
        finally:
            await runner.close()


async def test_an_api_that_echoes_the_request_gets_the_key_and_token_scrubbed_from_the_record(devstack):
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"you_sent": dict(request.headers)})

    app = web.Application()
    app.router.add_get("/echo", echo)
    record = await _run_against(devstack, app, "/echo")
    echoed = record["actions"][ACTION]["outputs"]["body"]["you_sent"]
    assert echoed["Ocp-Apim-Subscription-Key"] == "[redacted]"
    assert echoed["Authorization"] == "Bearer [redacted]"
    _assert_no_secret(json.dumps(record), devstack.endpoints["subscription_key"])


async def test_a_large_answer_is_recorded_bounded(devstack):
    async def big(request: web.Request) -> web.Response:
        return web.Response(text="x" * 200_000, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/big", big)
    body = (await _run_against(devstack, app, "/big"))["actions"][ACTION]["outputs"]["body"]
    assert body == "x" * MAX_RECORDED_BODY + "…"


@pytest.mark.parametrize("offset", [1, 20, 60])
async def test_a_secret_across_the_recording_bound_is_scrubbed_whole(devstack, offset):
    """A key echoed where the record is cut leaves no part of it behind (scrubbed before cutting)."""
    key = devstack.endpoints["subscription_key"]

    async def echo_at_the_cut(request: web.Request) -> web.Response:
        sent = request.headers["Ocp-Apim-Subscription-Key"]
        return web.Response(text="x" * (MAX_RECORDED_BODY - offset) + sent + "y" * 100, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/cut", echo_at_the_cut)
    body = (await _run_against(devstack, app, "/cut"))["actions"][ACTION]["outputs"]["body"]
    assert body.endswith("…")
    assert key[:offset] not in body.removeprefix("x" * (MAX_RECORDED_BODY - offset))


# --- the schedule ---------------------------------------------------------------------------

async def test_the_recurrence_fires_on_its_schedule(devstack, endpoints, tmp_path):
    def every_second(definition: dict[str, Any]) -> None:
        definition["triggers"]["Hourly"]["recurrence"] = {"frequency": "Second", "interval": 1}

    runner = WorkflowRunner(load_workflow(write_definition(tmp_path, every_second)),
                            logicapp.deployment_parameters(devstack.state), name="every-second",
                            identity_endpoint=endpoints["identity_endpoint"],
                            identity_header=devstack.state.identity_header)

    async def two_runs() -> list[dict[str, Any]]:
        await runner.start(schedule=True)
        try:
            assert runner.runs() == []  # the first run is due one period after the start
            for _ in range(200):  # up to 10 s; the second run is due after 2 s
                if len(runner.runs()) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert runner.describe()["scheduled"]
            return runner.runs()
        finally:
            await runner.close()

    runs = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(two_runs(), devstack._loop))
    assert [r["trigger"]["fired_by"] for r in runs[:2]] == ["schedule", "schedule"]
    assert all(r["status"] == "Succeeded" for r in runs)


def test_the_stack_runs_no_schedule_unless_asked(control):
    described = control._call("GET", "/logicapp")
    assert described["scheduled"] is False
    assert described["trigger"] == {"name": "Hourly", "type": "Recurrence", "frequency": "Hour", "interval": 1}
    assert described["parameters"]["subscriptionKey"] == "[securestring]"
    assert Path(described["definition"]) == DEPLOYED


# --- what the runner refuses ----------------------------------------------------------------

def _set(path: list[str], value: Any) -> Any:
    def change(definition: dict[str, Any]) -> None:
        node = definition
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


REFUSED = {
    "another action type": (_set(["actions", "Compose_It"], {"type": "Compose", "inputs": "x"}),
                            "actions.Compose_It: unsupported action type 'Compose'"),
    "another trigger": (_set(["triggers", "Hourly"], {"type": "Request", "kind": "Http"}),
                        "triggers.Hourly: unsupported trigger type 'Request'"),
    "another expression function": (_set(["actions", ACTION, "inputs", "uri"], "@concat('a', 'b')"),
                                    "unsupported expression function 'concat'"),
    "property access": (_set(["actions", ACTION, "inputs", "uri"], "@{parameters('apiPath')['x']}"),
                        "only parameters('<name>') is implemented"),
    "another authentication": (_set(["actions", ACTION, "inputs", "authentication"], {"type": "Basic"}),
                               "unsupported authentication type 'Basic'"),
    "a retry policy": (_set(["actions", ACTION, "inputs", "retryPolicy"], {"type": "none"}),
                       f"actions.{ACTION}.inputs: unsupported property 'retryPolicy'"),
    "a start time": (_set(["triggers", "Hourly", "recurrence", "startTime"], "2030-01-01T00:00:00Z"),
                     "triggers.Hourly.recurrence: unsupported property 'startTime'"),
    "a monthly recurrence": (_set(["triggers", "Hourly", "recurrence", "frequency"], "Month"),
                             "unsupported frequency 'Month'"),
    "another parameter type": (_set(["parameters", "apiPath", "type"], "int"), "unsupported parameter type 'int'"),
    "an undeclared parameter": (_set(["actions", ACTION, "inputs", "headers", "X-Other"], "@parameters('other')"),
                                "parameters('other') is not declared"),
    "run-after ordering": (_set(["actions", ACTION, "runAfter"], {"Other": ["Succeeded"]}), "runAfter"),
    "secure data of another kind": (_set(["actions", ACTION, "runtimeConfiguration", "secureData", "properties"],
                                         ["everything"]), "secureData.properties"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_definition_with_an_unsupported_element_is_refused_naming_it_and_the_file(tmp_path, case):
    change, named = REFUSED[case]
    path = write_definition(tmp_path, change)
    with pytest.raises(WorkflowError) as refused:
        load_workflow(path)
    assert any(named in problem and problem.startswith(str(path)) for problem in refused.value.problems), \
        refused.value.problems


def test_every_problem_is_listed_at_once(tmp_path):
    def two(definition: dict[str, Any]) -> None:
        REFUSED["another trigger"][0](definition)
        REFUSED["another action type"][0](definition)

    with pytest.raises(WorkflowError) as refused:
        load_workflow(write_definition(tmp_path, two))
    assert len(refused.value.problems) == 2


def test_the_stack_refuses_to_start_on_such_a_definition(tmp_path):
    path = write_definition(tmp_path, REFUSED["another action type"][0])
    with pytest.raises(WorkflowError, match=re.escape(str(path))):
        DevStack(config=load_config(logic_app_workflow=path)).start()


def test_type_names_and_frequencies_are_read_without_regard_to_case(tmp_path):
    def lower(definition: dict[str, Any]) -> None:
        definition["triggers"]["Hourly"]["type"] = "recurrence"
        definition["triggers"]["Hourly"]["recurrence"]["frequency"] = "hour"
        action_of(definition)["type"] = "http"
        action_of(definition)["inputs"]["authentication"]["type"] = "managedserviceidentity"

    workflow = load_workflow(write_definition(tmp_path, lower))
    assert workflow.trigger.frequency == "Hour" and workflow.actions[0].authentication is not None


def test_the_deployed_definition_is_accepted():
    workflow = load_workflow(DEPLOYED)
    [action] = workflow.actions
    assert action.secure_inputs and not action.secure_outputs
    assert workflow.parameters["subscriptionKey"].secure


def test_parameters_are_bound_as_a_deployment_binds_them():
    workflow = load_workflow(DEPLOYED)
    values = {name: "v" for name in workflow.parameters}
    assert bind_parameters(workflow, values) == values
    with pytest.raises(RunParameterError, match=r"'apiPath' .* has no value"):
        bind_parameters(workflow, {k: v for k, v in values.items() if k != "apiPath"})
    with pytest.raises(RunParameterError, match="'extra' is not declared"):
        bind_parameters(workflow, {**values, "extra": "v"})


# --- expressions --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "values", "expected"), [
    ("plain", {}, "plain"),
    ("user@example.com", {}, "user@example.com"),
    ("@@parameters('a')", {}, "@parameters('a')"),
    ("@parameters('a')", {"a": "A"}, "A"),
    ("@{parameters('a')}/x/@{ parameters( 'b' ) }", {"a": "A", "b": "B"}, "A/x/B"),
    ("@parameters('it''s')", {"it's": "quoted"}, "quoted"),
])
def test_expressions_evaluate_as_logic_apps_does(text, values, expected):
    assert compile_value(text).evaluate(values) == expected


def test_an_expression_names_the_parameters_it_reads():
    assert compile_value("@{parameters('a')}@{parameters('b')}").parts == (ParameterRef("a"), ParameterRef("b"))


@pytest.mark.parametrize("text", ["@variables('a')", "@{utcNow()}", "@parameters('a')?['b']", "@{parameters('a')",
                                  "@parameters(a)", "@1"])
def test_other_expressions_are_refused(text):
    with pytest.raises(ExpressionError):
        compile_value(text)
