"""The policy elements the APIM stand-in implements: one entry each, with where APIM
allows it, the statement it becomes, the method that reads it and the one that runs it.

An element missing here makes the stand-in refuse to start, naming the element and
its file (`reader`); tests/devstack/test_policy.py checks that every statement type
has exactly one entry, a reader that produces it and a handler.

To add a policy element:

1. `statements.py`: a frozen dataclass for it, added to `Statement`.
2. `reader.py`: a `read_<element>` method on PolicyReader that checks every attribute
   and child (report anything it does not implement) and returns the statement.
3. `gateway.py`: a Gateway method that runs it on an Exchange, as APIM does
   (`jwt_validation.py` or `expressions.py` if it needs token checks or expressions).
4. An entry below, and tests in tests/devstack/ (the element's behaviour, and its
   refusals), with the APIM documentation you followed cited in a comment.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from devstack.apim.gateway import Gateway, Handler
from devstack.apim.reader import PolicyReader
from devstack.apim.statements import (
    SECTIONS,
    AuthenticationManagedIdentity,
    Base,
    Choose,
    ForwardRequest,
    ReturnResponse,
    SetBody,
    SetHeader,
    SetQueryParameter,
    SetStatus,
    SetVariable,
    Statement,
    ValidateAzureAdToken,
    ValidateJwt,
)

Read = Callable[[PolicyReader, ET.Element, str], Statement]


@dataclass(frozen=True)
class Element:
    tag: str
    statement: type
    sections: frozenset[str]  # where APIM allows the element (its "Usage: policy sections")
    read: Read
    run: Handler | None  # None only for <base />, which compose() replaces before anything runs


ELEMENTS: Mapping[str, Element] = {element.tag: element for element in (
    Element("base", Base, frozenset(SECTIONS), PolicyReader.read_base, None),
    Element("validate-jwt", ValidateJwt, frozenset({"inbound"}), PolicyReader.read_validate_jwt,
            Gateway.validate_token),
    Element("validate-azure-ad-token", ValidateAzureAdToken, frozenset({"inbound"}),
            PolicyReader.read_validate_azure_ad_token, Gateway.validate_token),
    Element("set-header", SetHeader, frozenset(SECTIONS), PolicyReader.read_set_header, Gateway.set_header),
    Element("set-query-parameter", SetQueryParameter, frozenset({"inbound", "backend"}),
            PolicyReader.read_set_query_parameter, Gateway.set_query_parameter),
    Element("forward-request", ForwardRequest, frozenset({"backend"}), PolicyReader.read_forward_request,
            Gateway.forward_request),
    # Control flow (APIM docs: "Control flow" policy reference, "Return response", "Set variable").
    Element("choose", Choose, frozenset(SECTIONS), PolicyReader.read_choose, Gateway.choose),
    Element("return-response", ReturnResponse, frozenset(SECTIONS), PolicyReader.read_return_response,
            Gateway.return_response),
    Element("set-variable", SetVariable, frozenset(SECTIONS), PolicyReader.read_set_variable, Gateway.set_variable),
    # "Set status code": inbound, outbound, backend, on-error; "Set body": every section.
    Element("set-status", SetStatus, frozenset(SECTIONS), PolicyReader.read_set_status, Gateway.set_status),
    Element("set-body", SetBody, frozenset(SECTIONS), PolicyReader.read_set_body, Gateway.set_body),
    # "Authenticate with managed identity": inbound only; the token replaces Authorization.
    Element("authentication-managed-identity", AuthenticationManagedIdentity, frozenset({"inbound"}),
            PolicyReader.read_authentication_managed_identity, Gateway.authenticate_with_managed_identity),
)}


def handlers() -> dict[type, Handler]:
    """Statement type -> the Gateway method that runs it."""
    return {element.statement: element.run for element in ELEMENTS.values() if element.run is not None}
