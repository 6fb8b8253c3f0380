// Key Vault (RBAC mode) holding the APIM subscription key. The Function App setting
// APIM_SUBSCRIPTION_KEY is a Key Vault reference resolved by the platform with the host identity
// (keyVaultReferenceIdentity), so the key is in no app setting, output or deployment parameter:
// it goes straight from APIM (listSecrets) to the vault inside this module.

@description('Location of the vault.')
param location string

@description('Tags for every resource.')
param tags object

@description('Short unique suffix for resource names.')
param resourceToken string

@description('Name of the API Management service.')
param apimName string

@description('Name of the APIM subscription whose primary key is stored.')
param subscriptionName string

@description('Name of the Key Vault secret that holds the key.')
param itemName string = 'apim-subscription-key'

resource apim 'Microsoft.ApiManagement/service@2024-05-01' existing = {
  name: apimName
}

resource apimSubscription 'Microsoft.ApiManagement/service/subscriptions@2024-05-01' existing = {
  parent: apim
  name: subscriptionName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:Flex Consumption without VNet integration resolves Key Vault references over the public endpoint, and App Service is not a Key Vault trusted service; access is RBAC-only.
  // checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109: the platform resolves the reference over the public endpoint.
  // checkov:skip=CKV_AZURE_110:Purge protection would keep the vault name reserved after `azd down --purge`, so the same environment could not be re-provisioned for the retention period; turn it on for production.
  // checkov:skip=CKV_AZURE_42:Recoverable means soft delete plus purge protection; soft delete is on, purge protection is off for the reason given for CKV_AZURE_110.
  name: 'kv-${resourceToken}'
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Azure RBAC, not access policies: access is granted per secret with role assignments (rbac.bicep).
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource subscriptionKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41:The value is re-read from APIM on every provision and rotated in APIM (regenerate key, re-provision); an expiry date would make the Key Vault reference fail silently when it passes.
  parent: vault
  name: itemName
  properties: {
    value: apimSubscription.listSecrets().primaryKey
    contentType: 'APIM subscription key (Ocp-Apim-Subscription-Key)'
    attributes: {
      enabled: true
    }
  }
}

// Names and URIs only, never the value. (No "secret" in these names: the Bicep linter would take
// them for secrets.)
output vaultName string = vault.name
output itemName string = subscriptionKeySecret.name
// Versionless URI: the Key Vault reference follows rotations (App Service re-reads within 24 hours).
output itemUri string = subscriptionKeySecret.properties.secretUri
