// Azure role assignments for the Function App's host identity: the three data-plane permissions the
// Functions platform needs, each at the narrowest scope that works. The caller identities (reader,
// writer) get no Azure roles at all: their only permission is an app role on the Orders API
// (entra-role-assignments.bicep). API Management's own assignment is in apim.bicep.

@description('Principal ID of the host identity.')
param hostPrincipalId string

@description('Storage account used for AzureWebJobsStorage and the deployment package.')
param storageAccountName string

@description('Application Insights resource the app and the host send telemetry to.')
param appInsightsName string

@description('Key Vault holding the APIM subscription key.')
param keyVaultName string

@description('Name of the Key Vault secret the APIM_SUBSCRIPTION_KEY reference points to.')
param keyVaultItemName string

@description('Object ID of the developer (AZURE_PRINCIPAL_ID) who runs the app on a laptop against this deployment; empty: none.')
param developerPrincipalId string

@description('User or ServicePrincipal: the kind of developerPrincipalId.')
param developerPrincipalType string

// Built-in role definition IDs (the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: keyVaultItemName
}

// Storage Blob Data Owner on the storage account: the Functions host uses AzureWebJobsStorage
// (identity-based, __credential/__clientId) for its own containers (timer schedule status, locks,
// keys), and Flex Consumption reads the deployment package from the deployment container. Owner,
// not Contributor, is what the Functions host requires for its blob leases and containers.
resource hostStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, hostPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: hostPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher on Application Insights: Entra-authenticated ingestion
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING=ClientId=<host identity>;Authorization=AAD) for the
// host and the Python worker; local auth is disabled, so nothing else can send.
resource hostTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, hostPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: hostPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets User on the one secret (not the vault): the platform resolves the
// APIM_SUBSCRIPTION_KEY Key Vault reference with this identity (keyVaultReferenceIdentity).
resource hostSecret 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secret.id, hostPrincipalId, roles.keyVaultSecretsUser)
  scope: secret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: hostPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---- The developer's laptop run (only when AZURE_PRINCIPAL_ID is given) --------------------------
// The app under Core Tools on a laptop reads the subscription key into local.settings.json and
// sends its telemetry with the developer's own sign-in; host storage is Azurite there.

// Key Vault Secrets User (4633458b-17de-408a-b874-0445c86b69e6) on the one secret: the developer
// reads APIM_SUBSCRIPTION_KEY (az keyvault secret show) for local.settings.json.
resource developerSecret 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(developerPrincipalId)) {
  name: guid(secret.id, developerPrincipalId, roles.keyVaultSecretsUser)
  scope: secret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: developerPrincipalId
    principalType: developerPrincipalType
  }
}

// Monitoring Metrics Publisher (3913510d-42f4-4e42-8a64-420c390055eb) on Application Insights:
// local auth is off, so telemetry from a laptop needs an Entra identity allowed to publish.
resource developerTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(developerPrincipalId)) {
  name: guid(appInsights.id, developerPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: developerPrincipalId
    principalType: developerPrincipalType
  }
}
