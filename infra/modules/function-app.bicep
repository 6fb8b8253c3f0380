// The Function App: Flex Consumption, Linux, Python, user-assigned identities only, identity-based
// host storage and deployment, and every app setting in the README's table.

@description('Location of the plan and the app.')
param location string

@description('Tags for every resource.')
param tags object

@description('Short unique suffix for resource names.')
param resourceToken string

@description('azd service name (azure.yaml) that `azd deploy` looks for in the azd-service-name tag.')
param serviceName string = 'api'

@description('Python version of the Flex Consumption runtime.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string

@description('Maximum number of instances Flex Consumption scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('Memory of each instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Name of the host identity (storage, deployment, App Insights, Key Vault reference).')
param hostIdentityName string

@description('Resource ID of the reader identity (the API caller).')
param readerIdentityId string

@description('Client ID of the reader identity.')
param readerClientId string

@description('Resource ID of the writer identity; empty when the reader also writes.')
param writerIdentityId string

@description('Client ID of the writer identity; empty when the reader also writes.')
param writerClientId string

@description('Storage account for AzureWebJobsStorage and the deployment package.')
param storageAccountName string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Application Insights resource.')
param appInsightsName string

@description('APIM_BASE_URL: the Orders API on the APIM gateway.')
param apimBaseUrl string

@description('API_APP_ID_URI: Application ID URI of the Orders API app registration.')
param apiAppIdUri string

@description('URI of the Key Vault secret holding the APIM subscription key.')
param subscriptionKeyItemUri string

@description('TIMER_SCHEDULE (NCRONTAB, six fields).')
param timerSchedule string

@description('TIMER_API_PATH: what the timer GETs under APIM_BASE_URL.')
param timerApiPath string

@description('PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: true lets the Python worker configure Azure Monitor OpenTelemetry (the app then does not).')
param pythonWorkerTelemetry bool

resource hostIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: hostIdentityName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// The identities attached to the app. A managed identity can only fetch tokens on an app it is
// attached to, so the caller identities are attached too (they hold no Azure roles).
var userAssignedIdentities = union(
  {
    '${hostIdentity.id}': {}
    '${readerIdentityId}': {}
  },
  empty(writerIdentityId) ? {} : { '${writerIdentityId}': {} }
)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Zone redundancy for Flex Consumption is available only in some regions and fails the deployment elsewhere; enable it (properties.zoneRedundant) where your region supports it.
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true // Linux
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:An HTTP-triggered app called from outside by design (function keys); no VNet in this template.
  // checkov:skip=CKV_AZURE_17:Callers authenticate with function keys; requiring client certificates would lock out every caller the template documents.
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales to zero; always-ready instances cost money and are a per-deployment choice (functionAppConfig.scaleAndConcurrency.alwaysReady).
  // checkov:skip=CKV_AZURE_78:Flex Consumption has no FTP endpoint and rejects siteConfig.ftpsState (ARM error 51021); FTP basic-auth publishing is denied by the ftp basicPublishingCredentialsPolicies below.
  // checkov:skip=CKV_AZURE_213:The platform health check needs an anonymous path; /api/health requires a function key and reports configuration, not liveness.
  name: 'func-${resourceToken}'
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    // User-assigned only: the identities outlive the app and carry no surprise permissions.
    type: 'UserAssigned'
    userAssignedIdentities: userAssignedIdentities
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // The identity that resolves @Microsoft.KeyVault(...) references (default would be system-assigned).
    keyVaultReferenceIdentity: hostIdentity.id
    siteConfig: {
      // The README's app settings plus the platform's own, set here so that one resource holds the
      // whole app. Written out, not a loop over an object: a Bicep loop needs values known when the
      // deployment starts, and these include other resources' properties (error BCP178).
      // Flex Consumption takes the runtime from functionAppConfig, so FUNCTIONS_WORKER_RUNTIME and
      // FUNCTIONS_EXTENSION_VERSION are not set.
      appSettings: [
        // Host storage over Entra ID with the host identity (shared keys are disabled on the account).
        { name: 'AzureWebJobsStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: hostIdentity.properties.clientId }

        // Telemetry: Entra-authenticated ingestion with the host identity (Monitoring Metrics Publisher).
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${hostIdentity.properties.clientId};Authorization=AAD' }
        // Who configures Azure Monitor OpenTelemetry: the worker ('true') or the app itself. Never both.
        { name: 'PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY', value: pythonWorkerTelemetry ? 'true' : 'false' }
        // Export the app's own logs (logger "shared"), as shared/telemetry.py does when it configures
        // export itself; the root logger would also ship every azure-core request log line.
        { name: 'PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME', value: 'shared' }
        // Azure Monitor drops metric exemplars; without this the SDK still builds one per measurement.
        { name: 'OTEL_METRICS_EXEMPLAR_FILTER', value: 'always_off' }

        // The API and how to call it (the README's "App settings").
        { name: 'APIM_BASE_URL', value: apimBaseUrl }
        // Resolved by the platform with keyVaultReferenceIdentity; the app sees the key, never the vault.
        { name: 'APIM_SUBSCRIPTION_KEY', value: '@Microsoft.KeyVault(SecretUri=${subscriptionKeyItemUri})' }
        { name: 'API_APP_ID_URI', value: apiAppIdUri }
        { name: 'MANAGED_IDENTITY_CLIENT_ID', value: readerClientId }
        // Non-GET calls: the writer identity, or the reader when it holds both roles.
        { name: 'MANAGED_IDENTITY_WRITE_CLIENT_ID', value: empty(writerClientId) ? readerClientId : writerClientId }
        { name: 'AZURE_TENANT_ID', value: tenant().tenantId }
        { name: 'TIMER_SCHEDULE', value: timerSchedule }
        { name: 'TIMER_API_PATH', value: timerApiPath }
      ]
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      // No ftpsState: Flex Consumption has no FTP endpoint, and ARM rejects the property on Flex
      // sites in newer regions (error 51021). FTP publishing is off below (basic auth denied).
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          // azd deploy / func publish upload the package here; the platform reads it with the host identity.
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: hostIdentity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// No publishing with basic (username/password) credentials: FTP and SCM/Kudu only accept
// Entra ID, which is what `azd deploy` and `func azure functionapp publish` use.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
