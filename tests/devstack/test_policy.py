"""The APIM stand-in reads infra/apim strictly: what it does not implement, it refuses to run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devstack.apim import PolicyError, create_app, load_gateway_api, named_values
from devstack.apim.expressions import Jwt, compile_expression
from devstack.apim.reader import load_policy
from devstack.apim.registry import ELEMENTS
from devstack.apim.statements import (
    AuthenticationManagedIdentity,
    Base,
    ForwardRequest,
    PolicyDocument,
    SetHeader,
    SetQueryParameter,
    ValidateAzureAdToken,
    ValidateJwt,
    compose,
)
from devstack.config import PROJECT_ROOT, load_config
from devstack.state import StackState

INFRA_APIM = PROJECT_ROOT / "infra" / "apim"
INBOUND_BASE = "<inbound>\n        <base />"
OPENID_CONFIG_URL = "http://127.0.0.1:9/tenant/v2.0/.well-known/openid-configuration"


@pytest.fixture(scope="module")
def state() -> StackState:
    state = StackState.create(load_config())
    state.endpoints.update(openid_config_url=OPENID_CONFIG_URL, backend_url="http://127.0.0.1:9")
    return state


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A copy of infra/apim that a test may break."""
    return Path(shutil.copytree(INFRA_APIM, tmp_path / "apim"))


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def refusal(state: StackState, policy_dir: Path) -> str:
    with pytest.raises(PolicyError) as caught:
        load_gateway_api(state, policy_dir)
    return str(caught.value)


# --- the files infra/ deploys ---------------------------------------------------

def test_the_deployed_files_load_and_compose_api_then_operation(state):
    api = load_gateway_api(state)
    assert (api.name, api.path, api.subscription_required) == ("orders-api", "orders", True)
    routes = {(op.method, op.url_template): op for op in api.operations}
    assert set(routes) == {("GET", "/status"), ("GET", "/orders"), ("GET", "/orders/{id}"), ("POST", "/orders")}
    read, write = routes["GET", "/orders/{id}"].policy, routes["POST", "/orders"].policy
    # API scope first (token for this API), then the operation's role check.
    assert [type(s) for s in read["inbound"]] == [
        ValidateAzureAdToken, SetHeader, SetHeader, SetHeader, SetQueryParameter, AuthenticationManagedIdentity,
        ValidateJwt]
    # APIM's token for the backend goes in once every inbound check has passed; then APIM's default
    # global policy forwards.
    [authorization, forward] = read["backend"]
    assert isinstance(authorization, SetHeader) and authorization.name == "Authorization"
    assert forward == ForwardRequest()
    read_check, write_check = read["inbound"][-1], write["inbound"][-1]
    assert read_check.required_claims[0].values == (state.config.api.read_role,)
    assert write_check.required_claims[0].values == (state.config.api.write_role,)
    assert write_check.failed_status == 403 and state.config.api.write_role in write_check.failed_message
    assert read_check.openid_config_urls == (OPENID_CONFIG_URL,)


def test_named_values_are_the_contract_names(state):
    assert set(named_values(state)) == {"tenant-id", "api-app-id-uri", "api-client-id", "openid-config-url",
                                        "reader-role", "writer-role", "backend-app-id-uri",
                                        "sample-backend-app-id-uri", "sample-backend-client-id",
                                        "apim-backend-client-id", "reader-client-id", "writer-client-id",
                                        "developer-client-id"}


def test_api_policy_token_check_accepts_both_token_versions_audiences(state):
    api = load_gateway_api(state)
    check = api.operations[0].policy["inbound"][0]
    assert isinstance(check, ValidateAzureAdToken)
    assert set(check.audiences) == {state.config.api.client_id, state.config.api.app_id_uri}
    assert (check.failed_status, check.output_variable) == (401, "caller-token")


# --- refusals -------------------------------------------------------------------

@pytest.mark.parametrize("element", ['<rate-limit-by-key calls="5" renewal-period="60" counter-key="x" />', "<foo/>"])
def test_an_unknown_policy_element_is_refused_naming_it_and_its_file(state, policy_dir, element):
    replace_in(policy_dir / "operation-write-policy.xml", INBOUND_BASE, f"{INBOUND_BASE}\n        {element}")
    message = refusal(state, policy_dir)
    tag = element[1:].split()[0].rstrip("/>")
    assert f"<{tag}>" in message
    assert str(policy_dir / "operation-write-policy.xml") in message
    assert "not implemented" in message


def test_an_unknown_attribute_is_refused(state, policy_dir):
    replace_in(policy_dir / "operation-read-policy.xml", 'require-scheme="Bearer"',
               'require-scheme="Bearer" validate-connectivity="true"')
    message = refusal(state, policy_dir)
    assert "validate-connectivity" in message and "operation-read-policy.xml" in message


def test_an_unknown_child_element_is_refused(state, policy_dir):
    replace_in(policy_dir / "operation-read-policy.xml", "<audiences>",
               "<decryption-keys><key>AAAA</key></decryption-keys>\n            <audiences>")
    assert "<decryption-keys>" in refusal(state, policy_dir)


def test_an_unknown_named_value_is_refused(state, policy_dir):
    replace_in(policy_dir / "api-policy.xml", "{{api-client-id}}", "{{api-audience}}")
    message = refusal(state, policy_dir)
    assert "{{api-audience}}" in message and "api-policy.xml" in message


def test_an_expression_the_stand_in_does_not_know_is_refused(state, policy_dir):
    replace_in(policy_dir / "api-policy.xml", 'GetValueOrDefault("roles", "")', 'GetValueOrDefault("scp", "")')
    message = refusal(state, policy_dir)
    assert "policy expression not supported" in message and "scp" in message


def test_an_expression_where_only_literals_are_supported_is_refused(state, policy_dir):
    replace_in(policy_dir / "api-policy.xml", 'failed-validation-httpcode="401"',
               'failed-validation-httpcode="@(401)"')
    assert "failed-validation-httpcode" in refusal(state, policy_dir)


def test_every_problem_in_every_file_is_listed_at_once(state, policy_dir):
    replace_in(policy_dir / "api-policy.xml", INBOUND_BASE, f"{INBOUND_BASE}\n<cors />")
    replace_in(policy_dir / "operation-read-policy.xml", INBOUND_BASE, f"{INBOUND_BASE}\n<ip-filter />")
    with pytest.raises(PolicyError) as caught:
        load_gateway_api(state, policy_dir)
    assert len(caught.value.problems) == 2
    assert "<cors>" in str(caught.value) and "<ip-filter>" in str(caught.value)


def test_a_policy_in_a_section_where_apim_does_not_allow_it_is_refused(state, policy_dir):
    replace_in(policy_dir / "operation-read-policy.xml", "<backend>\n        <base />",
               "<backend>\n        <base />\n        <validate-jwt header-name=\"Authorization\" />")
    assert "not allowed in <backend>" in refusal(state, policy_dir)


def test_a_missing_section_is_refused_rather_than_guessed(state, policy_dir):
    replace_in(policy_dir / "operation-read-policy.xml", "<outbound>\n        <base />\n    </outbound>", "")
    assert "missing <outbound> section" in refusal(state, policy_dir)


def test_base_at_global_scope_is_refused(state, policy_dir):
    (policy_dir / "global-policy.xml").write_text(
        "<policies><inbound><base /></inbound><backend><forward-request /></backend>"
        "<outbound /><on-error /></policies>", encoding="utf-8")
    assert "no parent at global scope" in refusal(state, policy_dir)


def test_a_tenant_other_than_the_stand_ins_is_refused(state, policy_dir):
    replace_in(policy_dir / "api-policy.xml", 'tenant-id="{{tenant-id}}"', 'tenant-id="contoso.onmicrosoft.com"')
    assert "not the stand-in's tenant" in refusal(state, policy_dir)


def test_malformed_xml_is_refused(state, policy_dir):
    replace_in(policy_dir / "api-policy.xml", "</policies>", "")
    assert "not well-formed XML" in refusal(state, policy_dir)


def test_an_undeclared_template_parameter_is_refused(state, policy_dir):
    replace_in(policy_dir / "api.json", '"urlTemplate": "/orders/{id}"', '"urlTemplate": "/orders/{orderId}"')
    assert "templateParameters" in refusal(state, policy_dir)


def test_an_api_path_other_than_the_configs_is_refused(state, policy_dir):
    replace_in(policy_dir / "api.json", '"path": "orders"', '"path": "sales"')
    assert "apim.api_path" in refusal(state, policy_dir)


def test_create_app_refuses_to_start(state, policy_dir):
    replace_in(policy_dir / "api-policy.xml", INBOUND_BASE, f"{INBOUND_BASE}\n<foo/>")
    with pytest.raises(PolicyError, match="foo"):
        create_app(state, policy_dir=policy_dir)


def test_a_global_policy_file_is_composed_in(state, policy_dir):
    (policy_dir / "global-policy.xml").write_text(
        '<policies><inbound><set-header name="X-Global" exists-action="override"><value>1</value></set-header>'
        '</inbound><backend><forward-request timeout="20" /></backend><outbound /><on-error /></policies>',
        encoding="utf-8")
    inbound = load_gateway_api(state, policy_dir).operations[0].policy["inbound"]
    assert inbound[0] == SetHeader(name="X-Global", values=("1",))
    assert load_gateway_api(state, policy_dir).operations[0].policy["backend"][-1] == ForwardRequest(timeout=20)


# --- composition and expressions -------------------------------------------------

def test_a_section_without_base_drops_the_parent_scope_as_apim_does():
    parent = PolicyDocument("api", {"inbound": (SetHeader("A"),), "backend": (ForwardRequest(),),
                                    "outbound": (), "on-error": ()})
    child = PolicyDocument("op", {"inbound": (SetHeader("B"),), "backend": (Base(),),
                                  "outbound": (Base(),), "on-error": (Base(),)})
    effective = compose(parent, child)
    assert effective["inbound"] == (SetHeader("B"),)
    assert effective["backend"] == (ForwardRequest(),)


def test_two_forward_requests_in_one_effective_policy_are_refused():
    document = PolicyDocument("x", {"inbound": (), "backend": (ForwardRequest(), ForwardRequest()),
                                    "outbound": (), "on-error": ()})
    with pytest.raises(PolicyError, match="forward-request"):
        compose(document)


def test_load_policy_substitutes_named_values_after_parsing(tmp_path):
    path = tmp_path / "p.xml"
    path.write_text('<policies><inbound><set-header name="X"><value>{{v}}</value></set-header></inbound>'
                    "<backend /><outbound /><on-error /></policies>", encoding="utf-8")
    # A value cannot add elements.
    document = load_policy(path, {"v": "</value><foo/>"}, scope="global", elements=ELEMENTS)
    assert document.sections["inbound"] == (SetHeader("X", values=("</value><foo/>",)),)


def test_the_supported_expressions_read_the_caller_token():
    client_id = compile_expression(
        '@{\n  var jwt = (Jwt)context.Variables["caller-token"];\n'
        '  return jwt.Claims.GetValueOrDefault("azp", jwt.Claims.GetValueOrDefault("appid", ""));\n}')
    roles = compile_expression('@(((Jwt)context.Variables["caller-token"]).Claims.GetValueOrDefault("roles", ""))')
    assert client_id is not None and roles is not None

    class Context:
        def __init__(self, claims: dict) -> None:
            self.variables = {"caller-token": Jwt(header={}, claims=claims)}

    assert client_id.evaluate(Context({"azp": "v2-app", "roles": ["A", "B"]})) == "v2-app"
    assert client_id.evaluate(Context({"appid": "v1-app"})) == "v1-app"
    assert roles.evaluate(Context({"roles": ["A", "B"]})) == "A,B"
    assert roles.evaluate(Context({})) == ""
    assert compile_expression('@(context.Request.Headers.GetValueOrDefault("x", ""))') is None


# --- the registry: every statement type has one element, a reader and a handler ----------

SAMPLES = {  # the smallest document each element can appear in, to show its reader produces its statement
    "base": "<base />",
    "validate-jwt": '<validate-jwt header-name="Authorization"><openid-config url="https://x/" /></validate-jwt>',
    "validate-azure-ad-token": '<validate-azure-ad-token tenant-id="{{tenant-id}}"><client-application-ids>'
                               '<application-id>{{reader-client-id}}</application-id></client-application-ids>'
                               '</validate-azure-ad-token>',
    "set-header": '<set-header name="X-A" exists-action="override"><value>a</value></set-header>',
    "set-query-parameter": '<set-query-parameter name="a" exists-action="delete" />',
    "forward-request": "<forward-request />",
    "choose": '<choose><when condition=\'@(context.Operation.Id == "x")\'><set-variable name="a" value="1" />'
              '</when><otherwise /></choose>',
    "return-response": '<return-response><set-status code="204" reason="No Content" /></return-response>',
    "set-variable": '<set-variable name="a" value="b" />',
    "set-status": '<set-status code="202" reason="Accepted" />',
    "set-body": "<set-body>{}</set-body>",
    "authentication-managed-identity": '<authentication-managed-identity resource="api://backend" client-id="1" />',
}


def test_the_registry_covers_every_statement_type_once():
    from typing import get_args

    from devstack.apim.statements import Statement

    kinds = [element.statement for element in ELEMENTS.values()]
    assert sorted(kinds, key=lambda k: k.__name__) == sorted(get_args(Statement), key=lambda k: k.__name__)
    assert len(set(kinds)) == len(kinds)
    assert set(SAMPLES) == set(ELEMENTS)  # a new element needs a sample here too


@pytest.mark.parametrize("tag", sorted(SAMPLES))
def test_each_elements_reader_produces_its_statement_and_it_has_a_handler(tag, state, tmp_path):
    element = ELEMENTS[tag]
    section = next(s for s in ("inbound", "backend", "outbound", "on-error") if s in element.sections)
    scope = "api" if tag == "base" else "global"
    body = {s: (SAMPLES[tag] if s == section else "") for s in ("inbound", "backend", "outbound", "on-error")}
    path = tmp_path / "policy.xml"
    path.write_text("<policies>" + "".join(f"<{s}>{x}</{s}>" for s, x in body.items()) + "</policies>",
                    encoding="utf-8")
    document = load_policy(path, named_values(state), scope=scope, elements=ELEMENTS,
                           entra_tenant_id=state.config.tenant_id)
    [statement] = document.sections[section]
    assert type(statement) is element.statement
    if tag != "base":  # <base /> never runs: compose() replaces it
        from devstack.apim.gateway import Gateway

        assert element.run is not None and getattr(Gateway, element.run.__name__) is element.run


# --- control flow, responses and the managed identity: what the reader refuses ----------------

def _global(policy_dir: Path, inbound: str) -> None:
    (policy_dir / "global-policy.xml").write_text(
        f"<policies><inbound>{inbound}</inbound><backend><forward-request /></backend><outbound /><on-error />"
        "</policies>", encoding="utf-8")


WHEN_STATUS = '<when condition=\'@(context.Operation.Id == "get-status")\'>'


@pytest.mark.parametrize(("inbound", "expected"), [
    ("<choose />", "needs at least one <when>"),
    (f"<choose><otherwise /><{WHEN_STATUS[1:]}</when></choose>", "<otherwise> must be the last"),
    ('<choose><when condition="true" /></choose>', "must be a policy expression"),
    ("<choose><when condition='@(context.Operation.Id != \"x\")' /></choose>", "policy expression not supported"),
    (f"<choose>{WHEN_STATUS}<base /></when></choose>", "not nested"),
    (f"<choose>{WHEN_STATUS}<forward-request /></when></choose>", "not allowed in <inbound>"),
    (f"<choose>{WHEN_STATUS}<cors /></when></choose>", "not implemented"),
    ("<choose><when condition='@(context.Operation.Id == \"a\")'>text</when></choose>", "unexpected text"),
    ('<return-response><set-variable name="a" value="b" /></return-response>', "takes: set-status"),
    ('<return-response response-variable-name="r" />', "'response-variable-name' is not implemented"),
    ('<set-status code="99" reason="x" />', "'code' must be a whole number from 100 to 599"),
    ('<set-status code="200" />', "'reason' is missing"),
    ('<set-variable name="a" />', "'value' is missing"),
    ('<set-variable name="a" value="@{&#10;// the order&#10;return &quot;x&quot;; }" />', "a // comment"),
    ('<set-variable name="@(x)" value="b" />', "'name': the stand-in supports policy expressions only"),
    ('<set-body template="liquid">{}</set-body>', "'template' is not implemented"),
    ('<set-body>@(context.Request.Body.As&lt;string&gt;())</set-body>', "policy expression not supported"),
    ('<authentication-managed-identity />', "'resource' is missing"),
    ('<authentication-managed-identity resource=" " />', "must name the backend's app registration"),
    ('<authentication-managed-identity resource="api://x" />', "give client-id"),
    ('<authentication-managed-identity resource="api://x" client-id="1" ignore-error="maybe" />',
     "must be true or false"),
    ('<validate-azure-ad-token tenant-id="{{tenant-id}}"><audiences><audience>a</audience></audiences>'
     "</validate-azure-ad-token>", "<client-application-ids> is required"),
])
def test_what_the_stand_in_does_not_implement_is_refused(state, policy_dir, inbound, expected):
    _global(policy_dir, inbound)
    message = refusal(state, policy_dir)
    assert expected in message and "global-policy.xml" in message


def test_authentication_managed_identity_only_in_inbound(state, policy_dir):
    replace_in(policy_dir / "operation-read-policy.xml", "<outbound>\n        <base />",
               '<outbound>\n        <base />\n<authentication-managed-identity resource="api://x" />')
    assert "not allowed in <outbound>" in refusal(state, policy_dir)


def test_expressions_are_compared_without_layout_but_with_their_strings():
    assert compile_expression('@(   context.Operation.Id\n  ==  "get-status" )') is not None
    assert compile_expression('@(context.Operation.Id == "get status")') is None  # not an operation name
    assert compile_expression('@((string) context.Variables[ "orders" ])') is not None
    status = compile_expression('@(context.Operation.Id == "get-status")')
    assert status is not None

    class Context:
        operation_id = "get-status"

    assert status.evaluate(Context()) is True  # type: ignore[arg-type]


def test_any_failure_inside_a_twin_is_the_expressions_failure():
    from devstack.apim.expressions import ExpressionEvaluationError

    location = compile_expression('@("orders/" + (string)JObject.Parse((string)context.Variables["order"])["id"])')
    assert location is not None

    class Context:
        def __init__(self) -> None:
            self.variables = {"order": "[1, 2]"}  # JObject.Parse of an array throws in C#; here a TypeError

    with pytest.raises(ExpressionEvaluationError):
        location.evaluate(Context())  # type: ignore[arg-type]


def test_the_sample_backends_policy_is_read_as_strictly(state, tmp_path):
    from dataclasses import replace

    from devstack import backend
    from devstack.apim.api import load_policy_api

    sample = state.config.sample_backend
    broken = tmp_path / "policy.xml"
    broken.write_text(sample.policy.read_text(encoding="utf-8").replace(
        '<set-variable name="orders"', '<mock-response status-code="200" />\n<set-variable name="orders"', 1),
        encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy_api(INFRA_APIM / "api.json", broken, path=sample.api_path, named_values=named_values(state),
                        entra_tenant_id=state.config.tenant_id)
    assert "mock-response" in str(caught.value) and str(broken) in str(caught.value)
    # ...and the stack does not start on it.
    config = replace(state.config, sample_backend=replace(sample, policy=broken))
    with pytest.raises(PolicyError):
        backend.create_app(replace(state, config=config))
