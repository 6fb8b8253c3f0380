"""The Logic App that infra/ deploys runs the definition file the devstack runs, with the values
the devstack fills in: so a devstack run (tests/devstack/test_logicapp.py) tests what is deployed."""

from __future__ import annotations

import json
from typing import Any

from devstack import logicapp
from devstack.appsettings import DEFAULT_TIMER_API_PATH
from devstack.config import load_config
from tests.infra import bicep

MODULE = "modules/logic-app.bicep"


def _workflow(templates: dict[str, Any]) -> dict[str, Any]:
    file, workflow = bicep.one(templates, "Microsoft.Logic/workflows")
    assert file == MODULE
    return workflow


def test_the_deployed_definition_is_the_file_the_devstack_runs(templates):
    [load] = bicep.functions(_workflow(templates)["properties"]["definition"], "load_json_content")
    assert load["json_path"] is None
    deployed = (bicep.INFRA / "modules" / load["file_path"]).resolve()
    assert deployed == load_config().logic_app_workflow.resolve()
    logicapp.load_workflow(deployed)  # the runner accepts it as it is


def test_the_deployment_fills_in_every_workflow_parameter_and_nothing_else(templates, devstack):
    definition = json.loads(load_config().logic_app_workflow.read_text(encoding="utf-8"))
    filled = _workflow(templates)["properties"]["parameters"]
    assert set(filled) == set(definition["parameters"]) == set(logicapp.deployment_parameters(devstack.state))
    # Each plain value is the module parameter of the same name; the key comes from APIM itself.
    for name, entry in filled.items():
        if name != "subscriptionKey":
            assert entry == {"value": name}
            assert name in templates[MODULE]["parameters"]
    key = bicep.accessor(filled["subscriptionKey"]["value"]["operator"]["operands"]["operand_2"])
    assert key == ["primaryKey"]
    assert definition["parameters"]["subscriptionKey"]["type"] == "securestring"


def test_main_gives_the_workflow_what_the_devstack_gives_it(main):
    params = bicep.body(main["modules"]["logicApp"])["params"]
    assert bicep.accessor(params["callerIdentityId"]) == ["identities", "outputs", "readerIdentityId"]
    assert bicep.resolve(main, params["apiPath"]) == DEFAULT_TIMER_API_PATH
    assert logicapp.CALLER_IDENTITY == "reader"
    assert bicep.accessor(params["apiAppIdUri"]) == ["entraApi", "outputs", "identifierUri"]
    assert bicep.accessor(params["apimBaseUrl"]) == ["apim", "outputs", "apiBaseUrl"]


def test_the_workflow_has_only_the_identity_its_action_uses(templates):
    workflow = _workflow(templates)
    assert workflow["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {"'${callerIdentityId}'": {}}}
    definition = json.loads(load_config().logic_app_workflow.read_text(encoding="utf-8"))
    action = definition["actions"]["Call_Orders_API"]
    assert action["inputs"]["authentication"] == {"type": "ManagedServiceIdentity",
                                                  "identity": "@parameters('callerIdentityId')",
                                                  "audience": "@parameters('apiAppIdUri')"}
    assert action["runtimeConfiguration"]["secureData"]["properties"] == ["inputs"]
