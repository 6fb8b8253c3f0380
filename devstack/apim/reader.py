"""The XML reader: infra/'s policy files into statements (`statements`).

Reading is strict on purpose. An element, attribute or policy expression that the
stand-in does not implement is reported with its file and place, all problems at
once, and the stand-in refuses to start (PolicyError): a security policy that is
silently skipped is worse than none. Named values (`{{name}}`) are substituted
after parsing, so a value can never change the XML's structure; an unknown name is
a problem too. Which elements exist, where they may appear and which method reads
each is the registry's (`registry.ELEMENTS`), passed in by the caller.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.apim.errors import PolicyError
from devstack.apim.expressions import (
    Expression,
    compile_expression,
    has_line_comment,
    is_expression,
    known_expressions,
)
from devstack.apim.statements import (
    SCOPES,
    SECTIONS,
    AuthenticationManagedIdentity,
    Base,
    Choose,
    ForwardRequest,
    IssuerSigningKey,
    PolicyDocument,
    RequiredClaim,
    ReturnResponse,
    SetBody,
    SetHeader,
    SetQueryParameter,
    SetStatus,
    SetVariable,
    Statement,
    ValidateAzureAdToken,
    ValidateJwt,
    Value,
    When,
)

if TYPE_CHECKING:
    from devstack.apim.registry import Element

_NAMED_VALUE = re.compile(r"\{\{([^{}]*)\}\}")
# set-header cannot touch these in APIM either.
_FIXED_HEADERS = {"connection", "content-length", "keep-alive", "transfer-encoding"}


_EXISTS_ACTIONS = ("override", "skip", "append", "delete")
_TOKEN_SOURCES = ("header-name", "query-parameter-name", "token-value")
_TOKEN_CHECK_ATTRIBUTES = (*_TOKEN_SOURCES, "failed-validation-httpcode", "failed-validation-error-message",
                           "output-token-variable-name", "id")


def read_policy(path: Path, named_values: Mapping[str, str], *, scope: str, elements: Mapping[str, Element],
                entra_tenant_id: str | None = None) -> tuple[PolicyDocument | None, list[str]]:
    """Read one policy file: (document, problems). The document is None if it could not be read."""
    reader = PolicyReader(path, named_values, scope, elements, entra_tenant_id)
    document = reader.read()
    return (document if not reader.problems else None), reader.problems


def load_policy(path: Path, named_values: Mapping[str, str], *, scope: str, elements: Mapping[str, Element],
                entra_tenant_id: str | None = None) -> PolicyDocument:
    """Read one policy file or raise PolicyError listing its problems."""
    document, problems = read_policy(path, named_values, scope=scope, elements=elements,
                                     entra_tenant_id=entra_tenant_id)
    if problems or document is None:
        raise PolicyError(problems)
    return document


class PolicyReader:
    """Reads one file, collecting every problem rather than stopping at the first.

    The `read_*` methods read one policy element each; the registry names which.
    """

    def __init__(self, path: Path, named_values: Mapping[str, str], scope: str, elements: Mapping[str, Element],
                 tenant_id: str | None) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}")
        self.elements = elements
        self.path = path
        self.named_values = named_values
        self.scope = scope
        self.tenant_id = tenant_id
        self.problems: list[str] = []
        self.section = ""  # the section being read: nested statements (choose) must be allowed there too

    def report(self, where: str, message: str) -> None:
        self.problems.append(f"{self.path}: {where}: {message}")

    def read(self) -> PolicyDocument | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            self.problems.append(f"{self.path}: cannot read: {exc.strerror or exc}")
            return None
        try:
            root = ET.fromstring(text)  # noqa: S314 - the repository's own files (and expat limits entity expansion)
        except ET.ParseError as exc:
            self.problems.append(f"{self.path}: not well-formed XML: {exc}")
            return None
        if root.tag != "policies":
            self.report(f"<{root.tag}>", "the root element must be <policies>")
            return None
        self._attributes(root, "<policies>", ())
        self._no_text(root, "<policies>")
        sections: dict[str, tuple[Statement, ...]] = {}
        for element in root:
            where = f"<policies>/<{element.tag}>"
            if element.tag not in SECTIONS:
                self.report(where, f"unknown section (sections are: {', '.join(SECTIONS)})")
            elif element.tag in sections:
                self.report(where, "the section appears twice")
            else:
                sections[element.tag] = self._section(element, where)
        for section in SECTIONS:
            if section not in sections:
                self.report("<policies>", f"missing <{section}> section; write <{section}><base /></{section}> "
                            "to inherit the parent scope's")
        return PolicyDocument(source=str(self.path), sections=sections)

    # -- sections and statements --

    def _section(self, element: ET.Element, where: str) -> tuple[Statement, ...]:
        self._attributes(element, where, ())
        self._no_text(element, where)
        self.section = element.tag
        statements = self._statements(element, where, top_level=True)
        bases = sum(isinstance(s, Base) for s in statements)
        if bases and self.scope == "global":
            self.report(where, "<base /> has no parent at global scope")
        if bases > 1:
            self.report(where, "<base /> appears more than once")
        return statements

    def _statements(self, element: ET.Element, where: str, *, top_level: bool) -> tuple[Statement, ...]:
        """The policy elements in a section, or nested in one (`<when>`, `<otherwise>`)."""
        statements: list[Statement] = []
        for child in element:
            child_where = f"{where}/<{child.tag}>"
            spec = self.elements.get(child.tag)
            if spec is None:
                self.report(child_where, "this policy is not implemented by the devstack APIM stand-in "
                            f"(it implements: {', '.join(sorted(self.elements))})")
                continue
            if self.section not in spec.sections:
                self.report(child_where, f"<{child.tag}> is not allowed in <{self.section}> "
                            f"(allowed in: {', '.join(s for s in SECTIONS if s in spec.sections)})")
                continue
            if child.tag == "base" and not top_level:
                self.report(child_where, "<base /> belongs directly in a section, not nested")
                continue
            statements.append(spec.read(self, child, child_where))
        return tuple(statements)

    # -- one method per policy element (registry.ELEMENTS says which) --

    def read_base(self, element: ET.Element, where: str) -> Base:
        self._attributes(element, where, ())
        self._children(element, where, ())
        return Base()

    def read_forward_request(self, element: ET.Element, where: str) -> ForwardRequest:
        attrs = self._attributes(element, where, ("timeout", "follow-redirects", "id"))
        self._children(element, where, ())
        return ForwardRequest(
            timeout=self._int(attrs, "timeout", where, 300, minimum=0),
            follow_redirects=self._bool(attrs, "follow-redirects", where, False),
        )

    def read_set_header(self, element: ET.Element, where: str) -> SetHeader:
        name, action, values = self._set_item(element, where)
        if name.lower() in _FIXED_HEADERS:
            self.report(where, f"APIM cannot modify the {name} header")
        return SetHeader(name=name, exists_action=action, values=values)

    def read_set_query_parameter(self, element: ET.Element, where: str) -> SetQueryParameter:
        name, action, values = self._set_item(element, where)
        return SetQueryParameter(name=name, exists_action=action, values=values)

    def _set_item(self, element: ET.Element, where: str) -> tuple[str, str, tuple[Value, ...]]:
        """What set-header and set-query-parameter share: (name, exists-action, values)."""
        attrs = self._attributes(element, where, ("name", "exists-action", "id"), required=("name",))
        name = self._literal(attrs.get("name", ""), where, "name")
        action = self._literal(attrs.get("exists-action", "override"), where, "exists-action")
        if action not in _EXISTS_ACTIONS:
            self.report(where, f"exists-action must be one of {', '.join(_EXISTS_ACTIONS)}, not '{action}'")
        values = tuple(self._value(self._leaf_text(child, f"{where}/<value>", strip=False), f"{where}/<value>")
                       for child in self._children(element, where, ("value",)))
        return name, action, values

    def _token_check(self, where: str, attrs: dict[str, str]) -> dict[str, object]:
        """Parse what both token policies share; returns keyword arguments for TokenCheck."""
        sources = [name for name in _TOKEN_SOURCES if name in attrs]
        if len(sources) > 1:
            self.report(where, f"give only one of {', '.join(_TOKEN_SOURCES)} (found {', '.join(sources)})")
        token_value = attrs.get("token-value")
        return {
            "header_name": self._optional_literal(attrs, "header-name", where),
            "query_parameter_name": self._optional_literal(attrs, "query-parameter-name", where),
            "token_value": (self._attribute_value(token_value, f"{where} token-value")
                            if token_value is not None else None),
            "failed_status": self._int(attrs, "failed-validation-httpcode", where, 401, minimum=100, maximum=599),
            "failed_message": self._optional_literal(attrs, "failed-validation-error-message", where),
            "output_variable": self._optional_literal(attrs, "output-token-variable-name", where),
        }

    def read_validate_jwt(self, element: ET.Element, where: str) -> ValidateJwt:
        attrs = self._attributes(element, where, (*_TOKEN_CHECK_ATTRIBUTES, "require-expiration-time",
                                                  "require-scheme", "require-signed-tokens", "clock-skew"))
        common = self._token_check(where, attrs)
        if not any(name in attrs for name in _TOKEN_SOURCES):
            self.report(where, f"one of {', '.join(_TOKEN_SOURCES)} is required")
        children = self._children(element, where, ("openid-config", "issuer-signing-keys", "audiences",
                                                   "issuers", "required-claims"))
        urls = []
        for child in (c for c in children if c.tag == "openid-config"):
            child_attrs = self._attributes(child, f"{where}/<openid-config>", ("url",), required=("url",))
            self._children(child, f"{where}/<openid-config>", ())
            urls.append(self._literal(child_attrs.get("url", ""), f"{where}/<openid-config>", "url"))
        return ValidateJwt(
            **common,  # type: ignore[arg-type]
            require_scheme=self._optional_literal(attrs, "require-scheme", where),
            require_expiration_time=self._bool(attrs, "require-expiration-time", where, True),
            require_signed_tokens=self._bool(attrs, "require-signed-tokens", where, True),
            clock_skew=self._int(attrs, "clock-skew", where, 0, minimum=0),
            openid_config_urls=tuple(urls),
            signing_keys=self._signing_keys(self._single(children, "issuer-signing-keys", where), where),
            audiences=self._list(self._single(children, "audiences", where), "audience", where),
            issuers=self._list(self._single(children, "issuers", where), "issuer", where),
            required_claims=self._required_claims(self._single(children, "required-claims", where), where),
        )

    def read_validate_azure_ad_token(self, element: ET.Element, where: str) -> ValidateAzureAdToken:
        attrs = self._attributes(element, where, (*_TOKEN_CHECK_ATTRIBUTES, "tenant-id"), required=("tenant-id",))
        common = self._token_check(where, attrs)
        if not any(name in attrs for name in _TOKEN_SOURCES):
            common["header_name"] = "Authorization"  # the documented default, Bearer scheme
        tenant_id = self._literal(attrs.get("tenant-id", ""), where, "tenant-id")
        if self.tenant_id is not None and tenant_id and tenant_id.lower() != self.tenant_id.lower():
            self.report(where, f"tenant-id '{tenant_id}' is not the stand-in's tenant '{self.tenant_id}': "
                        "its Entra stand-in issues tokens for that tenant only")
        children = self._children(element, where, ("client-application-ids", "audiences", "required-claims"))
        if not any(child.tag == "client-application-ids" for child in children):
            # APIM refuses the policy without it (its reference: "Required: Yes"; MicrosoftDocs/azure-docs#121338).
            self.report(where, "<client-application-ids> is required: the client IDs of the apps that may call")
        return ValidateAzureAdToken(
            **common,  # type: ignore[arg-type]
            tenant_id=tenant_id,
            client_application_ids=self._list(self._single(children, "client-application-ids", where),
                                              "application-id", where),
            audiences=self._list(self._single(children, "audiences", where), "audience", where),
            required_claims=self._required_claims(self._single(children, "required-claims", where), where),
        )

    def read_set_variable(self, element: ET.Element, where: str) -> SetVariable:
        attrs = self._attributes(element, where, ("name", "value"), required=("name", "value"))
        self._children(element, where, ())
        return SetVariable(name=self._literal(attrs.get("name", ""), where, "name"),
                           value=self._attribute_value(attrs.get("value", ""), f"{where} value"))

    def read_set_status(self, element: ET.Element, where: str) -> SetStatus:
        attrs = self._attributes(element, where, ("code", "reason"), required=("code", "reason"))
        self._children(element, where, ())
        return SetStatus(code=self._int(attrs, "code", where, 200, minimum=100, maximum=599),
                         reason=self._literal(attrs.get("reason", ""), where, "reason"))

    def read_set_body(self, element: ET.Element, where: str) -> SetBody:
        # The text is the body exactly (no trimming), or one expression that returns it.
        return SetBody(value=self._value(self._leaf_text(element, where, strip=False), where))

    def read_choose(self, element: ET.Element, where: str) -> Choose:
        self._attributes(element, where, ())
        whens: list[When] = []
        otherwise: tuple[Statement, ...] | None = None
        for child in self._children(element, where, ("when", "otherwise")):
            child_where = f"{where}/<{child.tag}>"
            if otherwise is not None:
                self.report(child_where, "<otherwise> must be the last element of <choose>, and appear once")
            if child.tag == "otherwise":
                self._attributes(child, child_where, ())
                self._no_text(child, child_where)
                otherwise = self._statements(child, child_where, top_level=False)
                continue
            attrs = self._attributes(child, child_where, ("condition",), required=("condition",))
            condition = self._condition(attrs.get("condition", ""), child_where)
            self._no_text(child, child_where)
            statements = self._statements(child, child_where, top_level=False)
            if condition is not None:
                whens.append(When(condition=condition, statements=statements))
        if not any(child.tag == "when" for child in element):
            self.report(where, "<choose> needs at least one <when>")
        return Choose(whens=tuple(whens), otherwise=otherwise or ())

    def read_return_response(self, element: ET.Element, where: str) -> ReturnResponse:
        self._attributes(element, where, ())
        readers = {"set-status": PolicyReader.read_set_status, "set-header": PolicyReader.read_set_header,
                   "set-body": PolicyReader.read_set_body}
        statements = tuple(readers[child.tag](self, child, f"{where}/<{child.tag}>")
                           for child in self._children(element, where, tuple(readers)))
        return ReturnResponse(statements=statements)

    def read_authentication_managed_identity(self, element: ET.Element, where: str) -> AuthenticationManagedIdentity:
        attrs = self._attributes(element, where, ("resource", "client-id", "output-token-variable-name",
                                                  "ignore-error"), required=("resource",))
        self._children(element, where, ())
        resource = self._literal(attrs.get("resource", ""), where, "resource")
        if "resource" in attrs and not resource.strip():
            self.report(where, "'resource' must name the backend's app registration (App ID URI or client ID)")
        client_id = self._literal(attrs.get("client-id", ""), where, "client-id").strip()
        if not client_id:
            # Without client-id APIM uses its system-assigned identity, which the stand-in does not model.
            self.report(where, "give client-id: the stand-in's API Management has a user-assigned identity only "
                        "(named value apim-backend-client-id)")
        return AuthenticationManagedIdentity(
            resource=resource.strip(),
            client_id=client_id,
            output_variable=self._optional_literal(attrs, "output-token-variable-name", where),
            ignore_error=self._bool(attrs, "ignore-error", where, False),
        )

    # -- child elements --

    def _signing_keys(self, element: ET.Element | None, where: str) -> tuple[IssuerSigningKey, ...]:
        if element is None:
            return ()
        where = f"{where}/<issuer-signing-keys>"
        keys = []
        for child in self._children(element, where, ("key",)):
            key_where = f"{where}/<key>"
            attrs = self._attributes(child, key_where, ("id", "n", "e"))
            text = self._leaf_text(child, key_where, attributes=("id", "n", "e"))
            kid = self._optional_literal(attrs, "id", key_where)
            if "n" in attrs or "e" in attrs:
                if not ("n" in attrs and "e" in attrs) or text:
                    self.report(key_where, "give both n and e (and no key text), or only a Base64 key as text")
                keys.append(IssuerSigningKey(kid=kid, n=attrs.get("n"), e=attrs.get("e")))
                continue
            try:
                secret = base64.b64decode(self._literal(text, key_where, "text"), validate=True)
            except (binascii.Error, ValueError):
                secret = b""
            if not secret:
                self.report(key_where, "the key must be a Base64 encoded symmetric key, or n and e of an RSA key")
            keys.append(IssuerSigningKey(kid=kid, secret=secret))
        return tuple(keys)

    def _required_claims(self, element: ET.Element | None, where: str) -> tuple[RequiredClaim, ...]:
        if element is None:
            return ()
        where = f"{where}/<required-claims>"
        claims = []
        for child in self._children(element, where, ("claim",)):
            claim_where = f"{where}/<claim>"
            attrs = self._attributes(child, claim_where, ("name", "match", "separator"), required=("name",))
            match = self._literal(attrs.get("match", "all"), claim_where, "match")
            if match not in ("all", "any"):
                self.report(claim_where, f"match must be 'all' or 'any', not '{match}'")
            values = tuple(self._literal(self._leaf_text(value, f"{claim_where}/<value>"), f"{claim_where}/<value>",
                                         "value")
                           for value in self._children(child, claim_where, ("value",)))
            if not values:
                self.report(claim_where, "a claim needs at least one <value>")
            claims.append(RequiredClaim(name=self._literal(attrs.get("name", ""), claim_where, "name"),
                                        values=values, match=match,
                                        separator=self._optional_literal(attrs, "separator", claim_where)))
        return tuple(claims)

    def _list(self, element: ET.Element | None, item: str, where: str) -> tuple[str, ...]:
        if element is None:
            return ()
        where = f"{where}/<{element.tag}>"
        values = []
        for child in self._children(element, where, (item,)):
            value = self._leaf_text(child, f"{where}/<{item}>")
            if not value:
                self.report(f"{where}/<{item}>", "empty value")
            values.append(self._literal(value, f"{where}/<{item}>", item))
        if not values:
            self.report(where, f"needs at least one <{item}>")
        return tuple(values)

    def _single(self, children: list[ET.Element], tag: str, where: str) -> ET.Element | None:
        found = [c for c in children if c.tag == tag]
        if len(found) > 1:
            self.report(where, f"<{tag}> appears more than once")
        return found[0] if found else None

    # -- attributes, text and values --

    def _attributes(self, element: ET.Element, where: str, allowed: Iterable[str],
                    required: Iterable[str] = ()) -> dict[str, str]:
        allowed = tuple(allowed)
        attrs = {}
        for name, raw in element.attrib.items():
            if name not in allowed:
                implemented = f"implemented: {', '.join(allowed)}" if allowed else "it takes no attributes"
                self.report(where, f"attribute '{name}' is not implemented by the devstack APIM stand-in "
                            f"({implemented})")
                continue
            attrs[name] = self._substitute(raw, where)
        for name in required:
            if name not in element.attrib:
                self.report(where, f"required attribute '{name}' is missing")
        return attrs

    def _children(self, element: ET.Element, where: str, allowed: Iterable[str]) -> list[ET.Element]:
        allowed = tuple(allowed)
        children = []
        for child in element:
            if child.tag not in allowed:
                self.report(f"{where}/<{child.tag}>", "this element is not implemented by the devstack APIM stand-in"
                            + (f" (<{element.tag}> takes: {', '.join(allowed)})" if allowed else ""))
            else:
                children.append(child)
        self._no_text(element, where)
        return children

    def _leaf_text(self, element: ET.Element, where: str, *, attributes: Iterable[str] = (),
                   strip: bool = True) -> str:
        """The text of an element that holds only text; attributes other than `attributes` are reported."""
        self._attributes(element, where, attributes)
        for child in element:
            self.report(f"{where}/<{child.tag}>", "this element is not implemented by the devstack APIM stand-in")
        text = element.text or ""
        return self._substitute(text.strip() if strip else text, where)

    def _no_text(self, element: ET.Element, where: str) -> None:
        texts = [element.text or "", *((child.tail or "") for child in element)]
        if any(text.strip() for text in texts):
            self.report(where, "unexpected text")

    def _substitute(self, text: str, where: str) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name not in self.named_values:
                self.report(where, f"unknown named value '{{{{{name}}}}}' (the stand-in defines: "
                            f"{', '.join(sorted(self.named_values))})")
                return match.group(0)
            return self.named_values[name]

        return _NAMED_VALUE.sub(replace, text)

    def _value(self, text: str, where: str) -> Value:
        """A literal, or a policy expression the stand-in knows (named values already substituted)."""
        if not is_expression(text):
            return text
        expression = compile_expression(text)
        if expression is None:
            known = "\n      ".join(known_expressions())
            self.report(where, f"policy expression not supported by the stand-in: {text.strip()!r}; "
                        f"it supports exactly these (see devstack/apim/expressions.py):\n      {known}")
            return text
        return expression

    def _condition(self, text: str, where: str) -> Expression | None:
        """A `<when>` condition: always an expression (one the stand-in knows)."""
        if not is_expression(text):
            self.report(where, f"the condition must be a policy expression @(...), not {text.strip()!r}")
            return None
        value = self._attribute_value(text, where)
        return value if isinstance(value, Expression) else None

    def _attribute_value(self, text: str, where: str) -> Value:
        if is_expression(text) and has_line_comment(text):
            self.report(where, "a // comment in an attribute's expression comments out the rest of it in APIM "
                        "(XML turns the attribute's line breaks into spaces): use /* */ or an XML comment")
        return self._value(text, where)

    def _literal(self, value: str, where: str, name: str) -> str:
        if is_expression(value):
            self.report(where, f"'{name}': the stand-in supports policy expressions only in <value>, token-value, "
                        "set-variable's value, <set-body> and a <when> condition")
        return value

    def _optional_literal(self, attrs: Mapping[str, str], name: str, where: str) -> str | None:
        return self._literal(attrs[name], where, name) if name in attrs else None

    def _bool(self, attrs: Mapping[str, str], name: str, where: str, default: bool) -> bool:
        if name not in attrs:
            return default
        value = self._literal(attrs[name], where, name).strip().lower()
        if value not in ("true", "false"):
            self.report(where, f"'{name}' must be true or false, not '{attrs[name]}'")
        return value == "true"

    def _int(self, attrs: Mapping[str, str], name: str, where: str, default: int, *,
             minimum: int, maximum: int | None = None) -> int:
        if name not in attrs:
            return default
        raw = self._literal(attrs[name], where, name).strip()
        if not raw.isdigit() or int(raw) < minimum or (maximum is not None and int(raw) > maximum):
            limits = f"from {minimum}" + (f" to {maximum}" if maximum is not None else "")
            self.report(where, f"'{name}' must be a whole number {limits}, not '{attrs[name]}'")
            return default
        return int(raw)
