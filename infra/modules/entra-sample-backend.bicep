// The sample backend's Entra ID app registration: what API Management's managed identity gets a
// token for (authentication-managed-identity in ../apim/api-policy.xml) and what the sample
// backend's policy checks (validate-azure-ad-token in ../sample-backend/policy.xml), together with
// the calling app, which must be API Management's backend identity. Deployed only with the sample backend.
// Like the Orders API's registration it lives in the tenant; the predown hook removes it.

targetScope = 'subscription'

extension microsoftGraphV1

@description('Unique name of the app registration in the tenant (idempotency key for redeployments).')
param uniqueName string

@description('Display name of the app registration.')
param displayName string

@description('Application ID URI in a secure identifier URI pattern, e.g. api://<tenant ID>/orders-sample-backend-abc123.')
param identifierUri string

@description('Service management reference for tenants whose app management policy requires one; empty: not set.')
param serviceManagementReference string

resource backendApp 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  serviceManagementReference: empty(serviceManagementReference) ? null : serviceManagementReference
  identifierUris: [
    identifierUri
  ]
  api: {
    // v2 access tokens: aud is this app's client ID (the policy accepts the URI too).
    requestedAccessTokenVersion: 2
  }
  tags: [
    'HideApp'
  ]
}

resource backendServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: backendApp.appId
  // No app roles and no assignment: any identity of the tenant may get a token for this app, and
  // the sample backend's policy accepts exactly one of them (API Management's backend identity, by client ID). This also
  // spares the first deployment an app role assignment to an identity created moments before.
  appRoleAssignmentRequired: false
}

output appId string = backendApp.appId
output identifierUri string = identifierUri
