#!/bin/sh
# azd preprovision hook: register the resource providers this deployment needs.
# ARM registers only the namespaces a template declares, and Flex Consumption also needs
# Microsoft.App, which no template names: on a subscription that never used it the Function App
# fails to create. Registering is idempotent and free; a namespace already registered is skipped.
# Needs the Azure CLI signed in to the subscription azd uses. Without it this prints the manual
# command and lets `azd provision` go on. register-providers.ps1 is the same for Windows.
set -u

# Keep equal to register-providers.ps1 (tests/infra checks both against the templates).
providers="Microsoft.App Microsoft.Web Microsoft.ApiManagement Microsoft.KeyVault Microsoft.Storage Microsoft.Insights Microsoft.OperationalInsights Microsoft.ManagedIdentity Microsoft.Logic"

manual() {
  echo "  Register them yourself once per subscription:"
  echo "    for ns in $providers; do az provider register --namespace \$ns --wait; done"
}

if ! command -v az >/dev/null 2>&1; then
  echo "Azure CLI not found: cannot check the resource providers."
  manual
  exit 0
fi

subscription="${AZURE_SUBSCRIPTION_ID:-}"
set --
if [ -n "$subscription" ]; then
  set -- --subscription "$subscription"
fi

if ! az account show "$@" >/dev/null 2>&1; then
  echo "The Azure CLI is not signed in to subscription '${subscription:-<default>}' (az login): cannot check the resource providers."
  manual
  exit 0
fi

for ns in $providers; do
  state=$(az provider show --namespace "$ns" "$@" --query registrationState -o tsv 2>/dev/null)
  if [ "$state" = "Registered" ]; then
    continue
  fi
  echo "Registering resource provider $ns (state: ${state:-unknown}); this can take a few minutes."
  if ! az provider register --namespace "$ns" "$@" --wait; then
    echo "Could not register $ns: it needs a role with Microsoft.*/register/action on the subscription (Contributor or Owner)."
    manual
    exit 1
  fi
done
echo "Resource providers registered: $providers"
