# azd preprovision hook (Windows): register the resource providers this deployment needs.
# The same as register-providers.sh: ARM registers only the namespaces a template declares, and
# Flex Consumption also needs Microsoft.App, which no template names. Idempotent; needs the Azure
# CLI signed in to the subscription azd uses, else it prints the manual command and goes on.
$ErrorActionPreference = 'Continue'

# Keep equal to register-providers.sh (tests/infra checks both against the templates).
$providers = @('Microsoft.App', 'Microsoft.Web', 'Microsoft.ApiManagement', 'Microsoft.KeyVault', 'Microsoft.Storage', 'Microsoft.Insights', 'Microsoft.OperationalInsights', 'Microsoft.ManagedIdentity', 'Microsoft.Logic')

function Write-Manual {
    Write-Host '  Register them yourself once per subscription:'
    Write-Host "    foreach (`$ns in '$($providers -join "','")') { az provider register --namespace `$ns --wait }"
}

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Write-Host 'Azure CLI not found: cannot check the resource providers.'
    Write-Manual
    exit 0
}

$subscriptionArgs = @()
if ($env:AZURE_SUBSCRIPTION_ID) {
    $subscriptionArgs = @('--subscription', $env:AZURE_SUBSCRIPTION_ID)
}

az account show @subscriptionArgs *> $null
if ($LASTEXITCODE -ne 0) {
    Write-Host "The Azure CLI is not signed in to the subscription azd uses (az login): cannot check the resource providers."
    Write-Manual
    exit 0
}

foreach ($ns in $providers) {
    $state = az provider show --namespace $ns @subscriptionArgs --query registrationState -o tsv 2>$null
    if ($state -eq 'Registered') {
        continue
    }
    Write-Host "Registering resource provider $ns (state: $state); this can take a few minutes."
    az provider register --namespace $ns @subscriptionArgs --wait
    if ($LASTEXITCODE -ne 0) {
        Write-Host "Could not register ${ns}: it needs a role with Microsoft.*/register/action on the subscription (Contributor or Owner)."
        Write-Manual
        exit 1
    }
}
Write-Host "Resource providers registered: $($providers -join ' ')"
