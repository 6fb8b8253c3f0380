"""The Function App sets nothing that Flex Consumption deprecates.

The table is "Flex Consumption plan deprecations" in Microsoft's "App settings reference for Azure
Functions" (functions-app-settings, December 2025). ARM rejects some of these outright on Flex sites
(`siteConfig.ftpsState`: error 51021 in newer regions); the rest are ignored or break the app.
The table writes site properties as `properties.<name>` whatever their nesting (`alwaysOn` and
`ftpsState` live in `siteConfig`), so a name is looked for in `properties` and `siteConfig` alike.
"""

from __future__ import annotations

from typing import Any

from tests.infra import bicep

DEPRECATED_APP_SETTINGS = frozenset({
    "ENABLE_ORYX_BUILD",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_DNS_SERVER",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
})

DEPRECATED_SITE_PROPERTIES = frozenset({
    "alwaysOn",
    "containerSize",
    "dnsConfiguration",
    "ftpsState",
    "isReserved",
    "IsXenon",
    "javaVersion",
    "LinuxFxVersion",
    "netFrameworkVersion",
    "powerShellVersion",
    "functionAppScaleLimit",
    "preWarmedInstanceCount",
    "use32BitWorkerProcess",
    "vnetBackupRestoreEnabled",
    "vnetContentShareEnabled",
    "vnetImagePullEnabled",
    "vnetRouteAllEnabled",
    "windowsFxVersion",
})


def _set_properties(function_app: dict[str, Any]) -> set[str]:
    """Lower-cased names set directly in properties and in properties.siteConfig."""
    props = function_app["properties"]
    site_config = props.get("siteConfig", {})
    return {name.lower() for name in (*props, *site_config)}


def test_no_deprecated_site_property_is_set(function_app: dict[str, Any]) -> None:
    deprecated = {name.lower() for name in DEPRECATED_SITE_PROPERTIES}
    assert _set_properties(function_app) & deprecated == set()


def test_no_deprecated_app_setting_is_set(app_settings: dict[str, Any]) -> None:
    # App setting names are case-insensitive on App Service.
    deprecated = {name.upper() for name in DEPRECATED_APP_SETTINGS}
    assert {name.upper() for name in app_settings} & deprecated == set()


def test_no_deprecated_setting_anywhere_in_infra() -> None:
    # A setting added by another module (or a future appsettings config resource) counts too.
    for path in bicep.bicep_files():
        text = path.read_text()
        for name in DEPRECATED_APP_SETTINGS:
            assert f"'{name}'" not in text, f"{path.name} sets {name}"


def test_the_checks_would_see_a_deprecated_property(function_app: dict[str, Any]) -> None:
    broken = {**function_app, "properties": {**function_app["properties"],
                                             "siteConfig": {"ftpsState": "Disabled"}}}
    assert "ftpsstate" in _set_properties(broken)
