// Passwordless Function App -> API Management -> backend, in one deployment:
//   identities, the API's Entra app registration and app roles, API Management with the policies
//   the devstack runs, Key Vault for the subscription key, monitoring, storage and the Function App.
// Subscription scope: it creates the resource group (azd's convention), and the Entra ID objects
// are tenant-wide anyway. See infra/README.md for `azd up` and the plain `az` path.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd env name); names and tags derive from it.')
param environmentName string

// Regions that offer Flex Consumption (az functionapp list-flexconsumption-locations); azd offers
// only these when it asks for a location. The list grows: add a region once that command lists it.
@minLength(1)
@description('Region of every resource: one that offers Flex Consumption.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('API Management tier. Consumption deploys in about a minute; classic tiers take 30-45 minutes.')
@allowed([
  'Consumption'
  'Developer'
  'Basic'
  'Standard'
  'Premium'
  'BasicV2'
  'StandardV2'
])
param apimSku string = 'Consumption'

@description('API Management publisher e-mail (required by the service).')
param apimPublisherEmail string = 'apim-admin@example.com'

@description('Give non-GET calls their own identity with only the write role (least privilege). When false, the reader identity holds both roles.')
param separateWriterIdentity bool = true

@description('URL of your backend API behind APIM. Empty: a sample backend served by APIM itself (infra/sample-backend/).')
param backendServiceUrl string = ''

@description('With backendServiceUrl: the App ID URI (or client ID) of your backend\'s app registration. API Management calls your backend with a token of its managed identity for it, instead of the caller\'s token. Required with backendServiceUrl.')
param backendAppIdUri string = ''

@description('TIMER_SCHEDULE of the timer trigger (NCRONTAB with seconds). Default: every 5 minutes.')
param timerSchedule string = '0 */5 * * * *'

// What Flex Consumption supports (3.10-3.12, "Supported language stack versions") and the app
// needs (3.11 or later, pyproject.toml).
@description('Python version of the Function App (Flex Consumption builds requirements.txt remotely with it).')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.12'

@description('PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: true = the Functions Python worker configures Azure Monitor OpenTelemetry; false = the app does. See infra/README.md.')
param pythonWorkerTelemetry bool = true

@description('Maximum instances of the Flex Consumption app.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per Flex Consumption instance (MB).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Also deploy a Consumption Logic App that calls the API with the reader identity.')
param deployLogicApp bool = false

@description('Object ID of whoever runs `azd up` (azd sets AZURE_PRINCIPAL_ID): granted what a laptop run against this deployment needs (both app roles on the API, reading the subscription key secret, sending telemetry). Empty: nobody.')
param principalId string = ''

@description('Kind of principalId: User (a developer at a laptop) or ServicePrincipal (a pipeline).')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Service tree / service management reference of the API\'s app registration, for tenants whose app management policy requires one (a GUID from your organisation\'s service catalogue). Empty: not set.')
param serviceManagementReference string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

// The API's app registration. The App ID URI uses the unique name, so two environments in one
// tenant never share (or overwrite) an app registration. It has the form api://<tenant ID>/<name>,
// one of Entra ID's secure identifier URI patterns: tenants that enforce the default app
// management policy ("identifier URI restrictions") refuse api://<name> alone.
var apiUniqueName = 'orders-api-${resourceToken}'
var apiAppIdUri = 'api://${tenant().tenantId}/${apiUniqueName}'

// The sample backend's app registration (only without backendServiceUrl), in the same pattern.
var useSampleBackend = empty(backendServiceUrl)
var sampleBackendUniqueName = 'orders-sample-backend-${resourceToken}'
var sampleBackendAppIdUri = 'api://${tenant().tenantId}/${sampleBackendUniqueName}'
// What API Management's managed identity gets a token for when it calls the backend.
var backendTokenAudience = useSampleBackend ? sampleBackendAppIdUri : (empty(backendAppIdUri) ? fail('backendServiceUrl is set, so backendAppIdUri must be too: the App ID URI of your backend\'s app registration (API Management calls it with its managed identity).') : backendAppIdUri)

// App role values: the Entra app roles, the APIM named values the policies check, and the
// devstack's roles (devstack/config.json) are all these two strings.
var roles = {
  read: 'Orders.Read'
  write: 'Orders.Write'
}

// What the timer calls (TIMER_API_PATH): the cheapest read of the API.
var timerApiPath = '/status'
var deploymentContainerName = 'app-package'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identities 'modules/identities.bicep' = {
  name: 'identities'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    separateWriterIdentity: separateWriterIdentity
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
  }
}

// Subscription-scope deployments share one namespace per subscription: the token keeps the names
// of two environments (or two regions) apart.
module entraApi 'modules/entra-api.bicep' = {
  name: 'entra-api-${resourceToken}'
  params: {
    uniqueName: apiUniqueName
    displayName: 'Orders API (${environmentName})'
    identifierUri: apiAppIdUri
    serviceManagementReference: serviceManagementReference
    readRole: roles.read
    writeRole: roles.write
  }
}

module entraSampleBackend 'modules/entra-sample-backend.bicep' = if (useSampleBackend) {
  name: 'entra-sample-backend-${resourceToken}'
  params: {
    uniqueName: sampleBackendUniqueName
    displayName: 'Orders sample backend (${environmentName})'
    identifierUri: sampleBackendAppIdUri
    serviceManagementReference: serviceManagementReference
  }
}

module apim 'modules/apim.bicep' = {
  name: 'apim'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'apim-${resourceToken}'
    sku: apimSku
    publisherEmail: apimPublisherEmail
    publisherName: 'Orders API (${environmentName})'
    appInsightsName: monitoring.outputs.appInsightsName
    apiClientId: entraApi.outputs.appId
    apiAppIdUri: entraApi.outputs.identifierUri
    readRole: roles.read
    writeRole: roles.write
    backendServiceUrl: backendServiceUrl
    backendAppIdUri: backendTokenAudience
    backendIdentityId: identities.outputs.apimBackendIdentityId
    backendIdentityClientId: identities.outputs.apimBackendClientId
    readerClientId: identities.outputs.readerClientId
    writerClientId: separateWriterIdentity ? identities.outputs.writerClientId : identities.outputs.readerClientId
    sampleBackendClientId: useSampleBackend ? entraSampleBackend!.outputs.appId : ''
    createLogicAppSubscription: deployLogicApp
  }
}

// As late as it can be, on purpose: after API Management, Key Vault and the Azure role
// assignments (a minute or more), so that Entra has replicated the identities created at the start
// (see the module). Only the Function App waits for it.
module entraRoleAssignments 'modules/entra-role-assignments.bicep' = {
  name: 'entra-role-assignments-${resourceToken}'
  params: {
    apiServicePrincipalId: entraApi.outputs.servicePrincipalId
    readRoleId: entraApi.outputs.readRoleId
    writeRoleId: entraApi.outputs.writeRoleId
    readerPrincipalId: identities.outputs.readerPrincipalId
    writerPrincipalId: identities.outputs.writerPrincipalId
    developerPrincipalId: principalId
  }
  dependsOn: [
    rbac
  ]
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    deploymentContainerName: deploymentContainerName
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    apimName: apim.outputs.serviceName
    subscriptionName: apim.outputs.functionAppSubscriptionName
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    hostPrincipalId: identities.outputs.hostPrincipalId
    storageAccountName: storage.outputs.storageAccountName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.vaultName
    keyVaultItemName: keyVault.outputs.itemName
    developerPrincipalId: principalId
    developerPrincipalType: principalType
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    pythonVersion: pythonVersion
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    hostIdentityName: identities.outputs.hostIdentityName
    readerIdentityId: identities.outputs.readerIdentityId
    readerClientId: identities.outputs.readerClientId
    writerIdentityId: identities.outputs.writerIdentityId
    writerClientId: identities.outputs.writerClientId
    storageAccountName: storage.outputs.storageAccountName
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    apimBaseUrl: apim.outputs.apiBaseUrl
    apiAppIdUri: entraApi.outputs.identifierUri
    subscriptionKeyItemUri: keyVault.outputs.itemUri
    timerSchedule: timerSchedule
    timerApiPath: timerApiPath
    pythonWorkerTelemetry: pythonWorkerTelemetry
  }
  // The host must be able to read storage, send telemetry and resolve the Key Vault reference
  // when it first starts; the app roles must be in place before the first timer run.
  dependsOn: [
    rbac
    entraRoleAssignments
  ]
}

module logicApp 'modules/logic-app.bicep' = if (deployLogicApp) {
  name: 'logic-app'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    callerIdentityId: identities.outputs.readerIdentityId
    apiAppIdUri: entraApi.outputs.identifierUri
    apimBaseUrl: apim.outputs.apiBaseUrl
    apiPath: timerApiPath
    apimName: apim.outputs.serviceName
    subscriptionName: apim.outputs.logicAppSubscriptionName
  }
  dependsOn: [
    entraRoleAssignments
  ]
}

// What a user needs next (azd writes these to .azure/<env>/.env). Nothing secret: the subscription
// key stays in Key Vault, and the App Insights connection string is read from the app's settings.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output APIM_NAME string = apim.outputs.serviceName
output APIM_GATEWAY_URL string = apim.outputs.gatewayUrl
output APIM_BASE_URL string = apim.outputs.apiBaseUrl
output API_APP_ID_URI string = entraApi.outputs.identifierUri
output API_CLIENT_ID string = entraApi.outputs.appId
output API_APP_UNIQUE_NAME string = apiUniqueName
// The client ID API Management calls the backend with: what your own backend accepts.
output APIM_BACKEND_CLIENT_ID string = identities.outputs.apimBackendClientId
output SAMPLE_BACKEND_CLIENT_ID string = useSampleBackend ? entraSampleBackend!.outputs.appId : ''
output MANAGED_IDENTITY_CLIENT_ID string = identities.outputs.readerClientId
output MANAGED_IDENTITY_WRITE_CLIENT_ID string = separateWriterIdentity ? identities.outputs.writerClientId : identities.outputs.readerClientId
output KEY_VAULT_NAME string = keyVault.outputs.vaultName
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output LOGIC_APP_NAME string = deployLogicApp ? logicApp.outputs.name : ''
