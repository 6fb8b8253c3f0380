// Optional (deployLogicApp): a Consumption Logic App whose HTTP action calls the same Orders API
// with a managed identity, as the second walkthrough does. It uses the reader identity, so the same
// app role (Orders.Read) and the same APIM policy serve it: nothing new to grant.
// It runs hourly and can be run on demand from the portal ("Run trigger").

@description('Location of the workflow.')
param location string

@description('Tags for every resource.')
param tags object

@description('Short unique suffix for resource names.')
param resourceToken string

@description('Resource ID of the identity the HTTP action authenticates with (the reader identity).')
param callerIdentityId string

@description('Application ID URI of the Orders API: the audience of the token.')
param apiAppIdUri string

@description('Base URL of the Orders API on the gateway.')
param apimBaseUrl string

@description('Path the workflow GETs.')
param apiPath string

@description('Name of the API Management service.')
param apimName string

@description('APIM subscription of the Logic App (its own key, revocable on its own).')
param subscriptionName string

resource apim 'Microsoft.ApiManagement/service@2024-05-01' existing = {
  name: apimName
}

resource apimSubscription 'Microsoft.ApiManagement/service/subscriptions@2024-05-01' existing = {
  parent: apim
  name: subscriptionName
}

resource workflow 'Microsoft.Logic/workflows@2019-05-01' = {
  name: 'logic-${resourceToken}'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${callerIdentityId}': {}
    }
  }
  properties: {
    state: 'Enabled'
    // The definition is a file of its own, so that the devstack runs exactly what is deployed
    // (python -m devstack: the workflow runner). Everything that differs per deployment is a
    // workflow parameter, filled in here.
    definition: loadJsonContent('../logic-app/workflow.json')
    parameters: {
      apimBaseUrl: {
        value: apimBaseUrl
      }
      apiPath: {
        value: apiPath
      }
      apiAppIdUri: {
        value: apiAppIdUri
      }
      callerIdentityId: {
        value: callerIdentityId
      }
      // A securestring in the definition: not returned when the workflow is read back, and kept
      // out of the run history by the action's secureData.
      subscriptionKey: {
        value: apimSubscription.listSecrets().primaryKey
      }
    }
  }
}

output name string = workflow.name
