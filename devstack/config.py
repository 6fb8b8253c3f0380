"""The stand-in's world: tenant, API app registration and managed identities.

Loaded from `devstack/config.json` unless another file is given, so a user can
mirror their own app registration and identities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).with_name("config.json")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Fixed by default, so that a local.settings.json written once keeps working after a
# restart; a config's "ports" entry (or `up --port NAME=PORT`) overrides any of them,
# and 0 means "a free port". Kept clear of Core Tools (7071) and Azurite (10000-10002).
DEFAULT_PORTS = {"identity": 7171, "apim": 7172, "backend": 7173, "ingestion": 7174, "control": 7175}


@dataclass(frozen=True)
class Identity:
    """A managed identity and the app roles it holds on the API app registration."""

    name: str
    client_id: str
    principal_id: str
    resource_id: str
    roles: tuple[str, ...] = ()
    system_assigned: bool = False
    # Azure RBAC roles the identity holds on the stack's resources (e.g. "Monitoring Metrics
    # Publisher" on Application Insights, which Entra-authenticated ingestion requires).
    azure_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiApp:
    """The Entra app registration that represents the API behind APIM."""

    display_name: str
    app_id_uri: str
    client_id: str
    accepted_token_version: int
    read_role: str  # "" for an app with no app roles (the sample backend's)
    write_role: str
    # appRoleAssignmentRequired on the API's service principal (infra/ sets it): Entra then
    # issues no token for the API to an identity without an app role (AADSTS501051).
    assignment_required: bool = True
    # Optional claims the app registration asks for (optionalClaims.accessToken), e.g. "idtyp".
    optional_claims: tuple[str, ...] = ()

    @property
    def app_roles(self) -> tuple[str, ...]:
        """The app roles the registration defines."""
        return tuple(role for role in (self.read_role, self.write_role) if role)

    def matches(self, resource: str) -> bool:
        """True if `resource` (as sent to a token endpoint) names this app."""
        wanted = resource.rstrip("/")
        return wanted in (self.app_id_uri.rstrip("/"), self.client_id)


@dataclass(frozen=True)
class ExtraApi:
    """A further API behind the same APIM: its own app registration, path and policy files."""

    name: str  # the app's connection name for it (settings INVENTORY_APIM_BASE_URL, ...)
    app: ApiApp
    api_path: str
    policy_dir: Path


@dataclass(frozen=True)
class SampleBackend:
    """The sample backend API (infra/sample-backend): its app registration, its path and its policy file."""

    app: ApiApp
    api_path: str
    policy: Path


@dataclass(frozen=True)
class StackConfig:
    tenant_id: str
    api: ApiApp
    identities: dict[str, Identity]
    other_resources: tuple[str, ...] = ()
    extra_apis: tuple[ExtraApi, ...] = ()
    # Managed-identity tokens: valid this long from when the platform mints them (Azure: 24 h),
    # with iat/nbf this far in the past (Entra: 5 min), so exp - iat is about 24 h 5 min.
    token_lifetime_seconds: int = 86400
    token_backdate_seconds: int = 300
    api_path: str = "orders"
    policy_dir: Path = field(default_factory=lambda: PROJECT_ROOT / "infra" / "apim")
    subscription_key: str | None = None
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    # APIM refetches an OpenID configuration for a token whose kid it does not know at most this often.
    openid_refetch_seconds: int = 300
    # Application Insights' disableLocalAuth: false (infra/ deploys it so) means ingestion takes
    # only Entra-authenticated telemetry.
    ingestion_local_auth: bool = False
    # The Logic App workflow definition infra/ deploys (devstack.logicapp runs it).
    logic_app_workflow: Path = field(default_factory=lambda: PROJECT_ROOT / "infra" / "logic-app" / "workflow.json")
    sample_backend: SampleBackend | None = None
    # The APIM service's own user-assigned managed identity: what authentication-managed-identity
    # gets tokens with (client-id). Not one of `identities`, which are the Function App's.
    apim_identity: Identity | None = None

    @property
    def apis(self) -> tuple[ApiApp, ...]:
        """Every app registration the identity platform issues tokens for: the main API first."""
        backend = (self.sample_backend.app,) if self.sample_backend else ()
        return (self.api, *(extra.app for extra in self.extra_apis), *backend)

    def api_for(self, resource: str) -> ApiApp | None:
        """The API app registration `resource` names, if any."""
        return next((api for api in self.apis if api.matches(resource)), None)

    @property
    def system_identity(self) -> Identity | None:
        return next((i for i in self.identities.values() if i.system_assigned), None)

    def find_identity(
        self, *, client_id: str | None = None, principal_id: str | None = None, resource_id: str | None = None
    ) -> Identity | None:
        """Look an identity up the way the managed-identity endpoint does (case-insensitive IDs)."""
        for identity in self.identities.values():
            if client_id and identity.client_id.lower() == client_id.lower():
                return identity
            if principal_id and identity.principal_id.lower() == principal_id.lower():
                return identity
            if resource_id and identity.resource_id.lower() == resource_id.lower():
                return identity
        return None


def parse_port(service: str, value: object) -> int:
    """A port number for `service`: 1-65535, or 0 for a free port."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() \
            or not 0 <= int(value) <= 65535:
        raise ValueError(f"port for '{service}' must be a number from 1 to 65535 (or 0: a free port), not {value!r}")
    return int(value)


def _api_app(api: dict) -> ApiApp:
    roles = api.get("roles", {})
    return ApiApp(
        display_name=api.get("display_name", "API"),
        app_id_uri=api["app_id_uri"],
        client_id=api["client_id"],
        accepted_token_version=int(api.get("accepted_token_version", 2)),
        read_role=roles.get("read", ""),
        write_role=roles.get("write", ""),
        assignment_required=bool(api.get("assignment_required", True)),
        optional_claims=tuple(api.get("optional_claims", ())),
    )


def _identity(name: str, item: dict) -> Identity:
    return Identity(
        name=name,
        client_id=item["client_id"],
        principal_id=item["principal_id"],
        resource_id=item["resource_id"],
        roles=tuple(item.get("roles", ())),
        system_assigned=bool(item.get("system_assigned", False)),
        azure_roles=tuple(item.get("azure_roles", ())),
    )


def _sample_backend(raw: dict | None) -> SampleBackend | None:
    if raw is None:
        return None
    return SampleBackend(app=_api_app(raw), api_path=raw["api_path"].strip("/"), policy=_project_path(raw["policy"]))


def _project_path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else PROJECT_ROOT / path


def load_config(path: Path | str | None = None, **overrides: object) -> StackConfig:
    """Read a config file; keyword overrides replace top-level fields (handy in tests)."""
    raw = json.loads(Path(path or DEFAULT_CONFIG).read_text(encoding="utf-8"))
    api = raw["api"]
    apim = raw.get("apim", {})
    policy_dir = Path(apim.get("policy_dir", "infra/apim"))
    workflow = Path(raw.get("logic_app", {}).get("workflow", "infra/logic-app/workflow.json"))
    config = StackConfig(
        tenant_id=raw["tenant_id"],
        api=_api_app(api),
        identities={name: _identity(name, item) for name, item in raw["identities"].items()},
        other_resources=tuple(raw.get("other_resources", ())),
        extra_apis=tuple(
            ExtraApi(name=extra["name"], app=_api_app(extra), api_path=extra["api_path"].strip("/"),
                     policy_dir=_project_path(extra["policy_dir"]))
            for extra in raw.get("extra_apis", ())),
        token_lifetime_seconds=int(raw.get("token_lifetime_seconds", 86400)),
        token_backdate_seconds=int(raw.get("token_backdate_seconds", 300)),
        api_path=apim.get("api_path", "orders").strip("/"),
        policy_dir=policy_dir if policy_dir.is_absolute() else PROJECT_ROOT / policy_dir,
        subscription_key=apim.get("subscription_key"),
        ports={**DEFAULT_PORTS, **{name: parse_port(name, value) for name, value in raw.get("ports", {}).items()}},
        openid_refetch_seconds=int(apim.get("openid_refetch_seconds", 300)),
        ingestion_local_auth=bool(raw.get("ingestion", {}).get("local_auth", False)),
        logic_app_workflow=workflow if workflow.is_absolute() else PROJECT_ROOT / workflow,
        sample_backend=_sample_backend(raw.get("sample_backend")),
        apim_identity=_identity("apim", apim["identity"]) if "identity" in apim else None,
    )
    if overrides:
        from dataclasses import replace

        config = replace(config, **overrides)
    return config
