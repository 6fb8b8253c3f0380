// Storage for the Functions host (AzureWebJobsStorage: timer schedule state, locks) and for the
// Flex Consumption deployment package. Shared keys are disabled: every access is Entra ID with the
// host identity (role in rbac.bicep), so there is no connection string with a key anywhere.

@description('Location of the account.')
param location string

@description('Tags for every resource.')
param tags object

@description('Short unique suffix for resource names.')
param resourceToken string

@description('Blob container that Flex Consumption deploys the app package from.')
param deploymentContainerName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches storage over its public endpoint; access is Entra-only (shared keys off), see infra/README.md for the private-network variant.
  // checkov:skip=CKV_AZURE_206:Holds only re-creatable host state and the deployment package; LRS keeps the template cheap and available in every Flex region.
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: the public endpoint stays reachable, but only Entra ID principals with a data role get in.
  // checkov:skip=CKV_AZURE_43:The name is computed ('st' + uniqueString, 15 lowercase alphanumerics), which checkov cannot evaluate; tests/infra asserts the pattern.
  name: 'st${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // No account keys, no SAS signed with them: Entra ID only.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // A deleted deployment package or host container can be restored for a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output storageAccountName string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output deploymentContainerName string = deploymentContainer.name
