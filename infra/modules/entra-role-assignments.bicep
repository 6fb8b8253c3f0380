// App role assignments on the Orders API (Microsoft Graph appRoleAssignedTo): the "who may call
// the API with which role" part of the walkthroughs, which the APIM policy then enforces from the
// token's `roles` claim. Deployed as late as main.bicep can (after API Management, Key Vault and
// the Azure role assignments) so that Entra has replicated the managed identities' service
// principals: an assignment made seconds after the identity is created can fail with "Not a valid
// reference update" (microsoftgraph/msgraph-bicep-types#193). Bicep cannot retry a Graph resource;
// if it still happens, a second `azd provision` completes it (infra/README.md, first-run table).

targetScope = 'subscription'

extension microsoftGraphV1

@description('Object ID of the Orders API service principal.')
param apiServicePrincipalId string

@description('ID of the read app role (Orders.Read).')
param readRoleId string

@description('ID of the write app role (Orders.Write).')
param writeRoleId string

@description('Principal (object) ID of the reader identity.')
param readerPrincipalId string

@description('Principal ID of the writer identity; empty to give the write role to the reader identity.')
param writerPrincipalId string

@description('Object ID of the developer (AZURE_PRINCIPAL_ID) who runs the app on a laptop against this deployment; empty: none.')
param developerPrincipalId string

// Reader identity -> Orders.Read: the Function App's GET calls (timer, HTTP GET).
resource readerCanRead 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  resourceId: apiServicePrincipalId
  appRoleId: readRoleId
  principalId: readerPrincipalId
}

// Writer identity (or the reader when there is no separate writer) -> Orders.Write: non-GET calls.
resource writerCanWrite 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  resourceId: apiServicePrincipalId
  appRoleId: writeRoleId
  principalId: empty(writerPrincipalId) ? readerPrincipalId : writerPrincipalId
}

// The optional Logic App (logic-app.bicep) calls with the reader identity, so it needs no
// assignment of its own: the same app role and the same APIM policy serve it.

// The developer (azd's AZURE_PRINCIPAL_ID), when given -> both roles: a laptop run calls the API
// with the developer's own token (AzureCliCredential), which then carries these roles.
resource developerCanRead 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (!empty(developerPrincipalId)) {
  resourceId: apiServicePrincipalId
  appRoleId: readRoleId
  principalId: developerPrincipalId
}

resource developerCanWrite 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (!empty(developerPrincipalId)) {
  resourceId: apiServicePrincipalId
  appRoleId: writeRoleId
  principalId: developerPrincipalId
}
