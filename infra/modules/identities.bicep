// User-assigned managed identities. Three jobs, three identities, so that each holds only the
// permissions its job needs (least privilege) and survives a re-created Function App:
//   - host:   the Functions host itself (AzureWebJobsStorage, deployment package, App Insights
//             ingestion, the Key Vault reference). It has no role on the Orders API.
//   - reader: the identity the app calls the API with (MANAGED_IDENTITY_CLIENT_ID); app role Orders.Read.
//   - writer: used for non-GET calls (MANAGED_IDENTITY_WRITE_CLIENT_ID); app role Orders.Write.
//             Optional: without it the reader identity gets both app roles.
// And one for API Management: the identity it calls the backend with (authentication-managed-identity,
// by client ID; the sample backend accepts that client ID only). User-assigned, because a
// system-assigned identity's client ID is not known to the template.

@description('Location of the identities.')
param location string

@description('Tags for every resource.')
param tags object

@description('Short unique suffix for resource names.')
param resourceToken string

@description('Create a separate writer identity (least privilege). When false the reader identity also writes.')
param separateWriterIdentity bool

resource hostIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-func-host-${resourceToken}'
  location: location
  tags: tags
}

resource readerIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-orders-reader-${resourceToken}'
  location: location
  tags: tags
}

resource writerIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = if (separateWriterIdentity) {
  name: 'id-orders-writer-${resourceToken}'
  location: location
  tags: tags
}

resource apimBackendIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-apim-backend-${resourceToken}'
  location: location
  tags: tags
}

output hostIdentityName string = hostIdentity.name
output hostIdentityId string = hostIdentity.id
output hostClientId string = hostIdentity.properties.clientId
output hostPrincipalId string = hostIdentity.properties.principalId

output readerIdentityId string = readerIdentity.id
output readerClientId string = readerIdentity.properties.clientId
output readerPrincipalId string = readerIdentity.properties.principalId

// Empty when there is no separate writer: callers then fall back to the reader identity.
output writerIdentityId string = separateWriterIdentity ? writerIdentity.id : ''
output writerClientId string = separateWriterIdentity ? writerIdentity.properties.clientId : ''
output writerPrincipalId string = separateWriterIdentity ? writerIdentity.properties.principalId : ''

output apimBackendIdentityId string = apimBackendIdentity.id
output apimBackendClientId string = apimBackendIdentity.properties.clientId
