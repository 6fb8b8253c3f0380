// A stand-in backend served by API Management itself (answers from a policy), deployed only when no
// `backendServiceUrl` is given: `azd up` then yields a working end-to-end chain with no extra
// compute. The devstack runs the same policy file, so it answers the same here and there; it
// stores nothing. The Orders API forwards to it at https://<apim>.azure-api.net/<path>.
//
// It takes no subscription key, but a token: of API Management's own user-assigned identity, for
// the sample backend's app registration (entra-sample-backend.bicep), checked by its policy. Nobody
// else can call it, so the X-Caller-Client-Id it echoes is the one the Orders API set.

@description('Name of the API Management service.')
param apimName string

@description('Path of the sample backend on the gateway (the Orders API serviceUrl points here).')
param path string

@description('The Orders API operations (api.json): the sample answers the same routes.')
param operations array

@description('Client ID of the sample backend\'s app registration (the audience of v2 tokens).')
param backendClientId string

@description('App ID URI of the sample backend\'s app registration.')
param backendAppIdUri string

resource apim 'Microsoft.ApiManagement/service@2024-05-01' existing = {
  name: apimName
}

// The audience the policy checks; the caller it accepts is the service's named value apim-backend-client-id.
var namedValues = {
  'sample-backend-client-id': backendClientId
  'sample-backend-app-id-uri': backendAppIdUri
}

resource namedValue 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = [
  for item in items(namedValues): {
    parent: apim
    name: item.key
    properties: {
      displayName: item.key
      value: item.value
      secret: false
    }
  }
]

resource sampleApi 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: apim
  name: 'orders-sample-backend'
  properties: {
    displayName: 'Orders sample backend (stand-in)'
    path: path
    apiType: 'http'
    protocols: [
      'https'
    ]
    subscriptionRequired: false
  }
}

resource sampleOperation 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = [
  for op in operations: {
    parent: sampleApi
    name: op.name
    properties: {
      displayName: op.displayName
      method: op.method
      urlTemplate: op.urlTemplate
      templateParameters: op.?templateParameters ?? []
    }
  }
]

// The answers, chosen by operation name (context.Operation.Id).
resource samplePolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: sampleApi
  name: 'policy'
  properties: {
    format: 'xml' // policy.xml is XML-encoded (&quot;, &amp;&amp; in expressions); rawxml would encode it twice
    value: loadTextContent('../sample-backend/policy.xml')
  }
  dependsOn: [
    sampleOperation
    namedValue
  ]
}
