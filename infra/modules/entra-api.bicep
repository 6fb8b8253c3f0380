// The Orders API's Entra ID app registration and service principal, through the Microsoft Graph
// Bicep extension (see ../bicepconfig.json). This replaces the portal clicks of the walkthroughs:
// app registration, App ID URI, app roles, "assignment required".
// Graph objects live in the tenant, not in the resource group: `azd down` does not delete them
// (the predown hook in azure.yaml does).

targetScope = 'subscription'

extension microsoftGraphV1

@description('Unique name of the app registration in the tenant (idempotency key for redeployments).')
param uniqueName string

@description('Display name of the app registration.')
param displayName string

@description('Application ID URI in a secure identifier URI pattern, e.g. api://<tenant ID>/orders-api-abc123. Tokens are requested for <uri>/.default.')
param identifierUri string

@description('Service management reference for tenants whose app management policy requires one; empty: not set.')
param serviceManagementReference string

@description('Value of the app role for reads (GET), e.g. Orders.Read.')
param readRole string

@description('Value of the app role for writes (every other method), e.g. Orders.Write.')
param writeRole string

// Stable role IDs: the same tenant, app and role value always give the same GUID, so a redeployment
// updates the role instead of creating a new one (which would orphan existing assignments).
var readRoleId = guid(tenant().tenantId, uniqueName, readRole)
var writeRoleId = guid(tenant().tenantId, uniqueName, writeRole)
var developerScopeId = guid(tenant().tenantId, uniqueName, 'user_impersonation')

// The Azure CLI's public client ID (the same in every tenant). Pre-authorized for the scope below,
// so that `az login` can get a token for this API without a consent prompt: the developer's
// laptop run (AzureCliCredential) calls the API with it. Who may call is still decided by app role
// assignments (assignment required on the service principal; roles checked by APIM).
var azureCliClientId = '04b07795-8ddb-461a-bbee-02f9e1bf7b46'

resource apiApp 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  // Single tenant: only identities of this tenant get tokens for the API.
  signInAudience: 'AzureADMyOrg'
  serviceManagementReference: empty(serviceManagementReference) ? null : serviceManagementReference
  identifierUris: [
    identifierUri
  ]
  api: {
    // v2 access tokens: aud is the API's client ID and iss ends in /v2.0. The APIM policy and the
    // devstack (devstack/config.json accepted_token_version) expect exactly this.
    requestedAccessTokenVersion: 2
    // One delegated scope, so that a signed-in developer can request a token for the API at all;
    // the roles in that token come from the developer's app role assignments (main.bicep principalId).
    oauth2PermissionScopes: [
      {
        id: developerScopeId
        value: 'user_impersonation'
        type: 'Admin'
        isEnabled: true
        adminConsentDisplayName: 'Call the Orders API as the signed-in user'
        adminConsentDescription: 'Lets a developer call the Orders API with their own sign-in; what they may do is set by their app role assignments.'
      }
    ]
    preAuthorizedApplications: [
      {
        appId: azureCliClientId
        delegatedPermissionIds: [
          developerScopeId
        ]
      }
    ]
  }
  appRoles: [
    {
      id: readRoleId
      value: readRole
      displayName: readRole
      description: 'Read orders and the API status (GET).'
      // Applications (the managed identities) and users (a developer at a laptop, when assigned).
      allowedMemberTypes: [
        'Application'
        'User'
      ]
      isEnabled: true
    }
    {
      id: writeRoleId
      value: writeRole
      displayName: writeRole
      description: 'Create orders (POST and other non-GET methods).'
      allowedMemberTypes: [
        'Application'
        'User'
      ]
      isEnabled: true
    }
  ]
  // Keep the API out of users' My Apps portal: it is called by workloads only.
  tags: [
    'HideApp'
  ]
}

resource apiServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: apiApp.appId
  // Without an assigned app role Entra refuses to issue a token for this API at all
  // (AADSTS501051), so an unassigned identity fails early, not just at the APIM policy.
  appRoleAssignmentRequired: true
}

output appId string = apiApp.appId
output identifierUri string = identifierUri
output servicePrincipalId string = apiServicePrincipal.id
output readRoleId string = readRoleId
output writeRoleId string = writeRoleId
