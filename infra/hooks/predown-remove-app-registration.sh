#!/bin/sh
# azd predown hook: remove the app registrations this template created (the Orders API's and, with
# the sample backend, the sample backend's) and their service principals, which live in the Entra
# ID tenant and so survive `azd down` (it deletes the resource group only).
# Both are also purged from "deleted items": a soft-deleted app keeps its api:// identifier URI
# reserved, and the next `azd up` of the same environment would fail on it.
# Needs the Azure CLI, signed in to the same tenant as azd, and rights to delete the apps.
set -u

app_ids="${API_CLIENT_ID:-} ${SAMPLE_BACKEND_CLIENT_ID:-}"
if [ -z "$(echo "$app_ids" | tr -d ' ')" ]; then
  echo "API_CLIENT_ID is not set in this azd environment: nothing to remove."
  exit 0
fi
if ! command -v az >/dev/null 2>&1; then
  echo "Azure CLI not found: remove the app registrations yourself: az ad app delete --id <appId> for $app_ids"
  exit 0
fi

# Entra ID is eventually consistent: retry each step a few times.
retry() {
  n=0
  until "$@" >/dev/null 2>&1; do
    n=$((n + 1))
    if [ "$n" -ge 10 ]; then
      echo "  gave up: $*"
      return 1
    fi
    sleep 3
  done
}

graph="https://graph.microsoft.com/v1.0"
for app_id in $app_ids; do
  app_object_id=$(az ad app show --id "$app_id" --query id -o tsv 2>/dev/null)
  sp_object_id=$(az ad sp show --id "$app_id" --query id -o tsv 2>/dev/null)

  if [ -n "$sp_object_id" ]; then
    echo "Deleting service principal $sp_object_id"
    retry az ad sp delete --id "$sp_object_id"
    retry az rest --method DELETE --url "$graph/directory/deletedItems/$sp_object_id"
  fi
  if [ -n "$app_object_id" ]; then
    echo "Deleting app registration $app_object_id (appId $app_id)"
    retry az ad app delete --id "$app_object_id"
    retry az rest --method DELETE --url "$graph/directory/deletedItems/$app_object_id"
  fi
done
echo "Done."
