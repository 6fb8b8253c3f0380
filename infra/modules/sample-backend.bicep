// A stand-in backend served by API Management itself (mock responses from a policy), deployed only
// when no `backendServiceUrl` is given: `azd up` then yields a working end-to-end chain with no
// extra compute. It mirrors the devstack backend's routes and bodies but stores nothing.
// The Orders API forwards to it at https://<apim>.azure-api.net/<path>.
//
// It needs no subscription key or token of its own: it holds only static sample data, and the
// Orders API in front of it has already authenticated and authorized the caller.

@description('Name of the API Management service.')
param apimName string

@description('Path of the sample backend on the gateway (the Orders API serviceUrl points here).')
param path string

@description('The Orders API operations (api.json): the sample answers the same routes.')
param operations array

resource apim 'Microsoft.ApiManagement/service@2024-05-01' existing = {
  name: apimName
}

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
  ]
}
