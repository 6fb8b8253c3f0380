// API Management: the Orders API, its operations and policies, the named values the policies use,
// a product + subscriptions (the Ocp-Apim-Subscription-Key), and request logging to App Insights.
//
// The API definition and every policy come from ../apim/ — the same files the local stand-in
// (`python -m devstack up`) enforces — so what is tested offline is what is deployed.
// loadJsonContent/loadTextContent inline them at build time (they need literal paths).

@description('Location of the service.')
param location string

@description('Tags for every resource.')
param tags object

@description('Name of the API Management service.')
param name string

@description('Pricing tier. Consumption deploys in about a minute and costs nothing when idle; the classic tiers take 30-45 minutes to create.')
@allowed([
  'Consumption'
  'Developer'
  'Basic'
  'Standard'
  'Premium'
  'BasicV2'
  'StandardV2'
])
param sku string

@description('Publisher e-mail (required by API Management; receives service notifications).')
param publisherEmail string

@description('Publisher name shown in the developer portal.')
param publisherName string

@description('Name of the Application Insights resource that receives the gateway logs.')
param appInsightsName string

@description('Application (client) ID of the Orders API app registration: the audience of v2 tokens.')
param apiClientId string

@description('Application ID URI of the Orders API app registration.')
param apiAppIdUri string

@description('App role a read operation requires (named value reader-role).')
param readRole string

@description('App role a write operation requires (named value writer-role).')
param writeRole string

@description('URL of the real backend behind the Orders API. Empty: the sample backend in this service (sample-backend.bicep).')
param backendServiceUrl string

@description('App ID URI of the backend\'s app registration: API Management calls the backend with a token of its managed identity for it (named value backend-app-id-uri).')
param backendAppIdUri string

@description('Resource ID of the user-assigned identity API Management calls the backend with.')
param backendIdentityId string

@description('Client ID of that identity (named value apim-backend-client-id).')
param backendIdentityClientId string

@description('Client ID of the reader identity: allowed to call the Orders API (client-application-ids).')
param readerClientId string

@description('Client ID of the writer identity (the reader\'s when there is none).')
param writerClientId string

@description('Client ID of the sample backend\'s app registration; empty with backendServiceUrl.')
param sampleBackendClientId string

@description('Create a subscription for the optional Logic App.')
param createLogicAppSubscription bool

// The API contract shared with the devstack: name, path, operations, and which policy each uses.
var api = loadJsonContent('../apim/api.json')

// One policy per kind of operation, chosen by the operation's "policy" field in api.json.
var operationPolicies = {
  read: loadTextContent('../apim/operation-read-policy.xml')
  write: loadTextContent('../apim/operation-write-policy.xml')
}

// Values the policy XML refers to as {{name}}. None is secret (tenant, audience, role names).
var namedValues = {
  'tenant-id': tenant().tenantId
  'api-app-id-uri': apiAppIdUri
  'api-client-id': apiClientId
  'openid-config-url': '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0/.well-known/openid-configuration'
  'reader-role': readRole
  'writer-role': writeRole
  'backend-app-id-uri': backendAppIdUri
  'apim-backend-client-id': backendIdentityClientId
  // validate-azure-ad-token's client-application-ids (APIM requires the list): who may call.
  'reader-client-id': readerClientId
  'writer-client-id': writerClientId
  // The Azure CLI's public client ID (the same in every tenant): a developer's own sign-in.
  'developer-client-id': '04b07795-8ddb-461a-bbee-02f9e1bf7b46'
}

var isConsumption = sku == 'Consumption'

// TLS 1.0/1.1, SSL 3.0 and 3DES off, client and backend side (classic and v2 tiers).
var tlsHardening = {
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls10': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls11': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls10': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls11': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Ssl30': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Ciphers.TripleDes168': 'False'
}

var useSampleBackend = empty(backendServiceUrl)

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource apim 'Microsoft.ApiManagement/service@2024-05-01' = {
  // checkov:skip=CKV_AZURE_107:The Consumption tier cannot join a virtual network; the gateway is public and every call needs a token with an app role and a subscription key.
  // checkov:skip=CKV_AZURE_174:The Function App reaches the gateway over the internet (no VNet in this template); callers are authenticated by token and subscription key.
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
    capacity: isConsumption ? 0 : 1
  }
  // System-assigned: the gateway's logger sends to App Insights with it. User-assigned: the Orders
  // API calls its backend with it (authentication-managed-identity in ../apim/api-policy.xml).
  identity: {
    type: 'SystemAssigned, UserAssigned'
    userAssignedIdentities: {
      '${backendIdentityId}': {}
    }
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    // Old protocols off where the tier lets us set them (the Consumption tier does not).
    customProperties: isConsumption ? {} : tlsHardening
  }
}

// ---- Named values --------------------------------------------------------------------------

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

// ---- The Orders API --------------------------------------------------------------------------

resource ordersApi 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: apim
  name: api.name
  properties: {
    displayName: api.displayName
    path: api.path
    apiType: 'http'
    protocols: [
      'https'
    ]
    subscriptionRequired: api.subscriptionRequired
    subscriptionKeyParameterNames: {
      header: 'Ocp-Apim-Subscription-Key'
      query: 'subscription-key'
    }
    serviceUrl: useSampleBackend ? '${apim.properties.gatewayUrl}/${sampleBackendPath}' : backendServiceUrl
  }
}

// API-scope policy: token validation common to every operation.
resource ordersApiPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: ordersApi
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: loadTextContent('../apim/api-policy.xml')
  }
  // The policy refers to the named values; they must exist before it is validated.
  dependsOn: [
    namedValue
  ]
}

resource operation 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = [
  for op in api.operations: {
    parent: ordersApi
    name: op.name
    properties: {
      displayName: op.displayName
      method: op.method
      urlTemplate: op.urlTemplate
      templateParameters: op.?templateParameters ?? []
    }
  }
]

// Operation-scope policy: the app role the operation requires (read or write).
resource operationPolicy 'Microsoft.ApiManagement/service/apis/operations/policies@2024-05-01' = [
  for (op, i) in api.operations: {
    parent: operation[i]
    name: 'policy'
    properties: {
      format: 'rawxml'
      value: operationPolicies[op.policy]
    }
    dependsOn: [
      namedValue
    ]
  }
]

// ---- Product and subscriptions (the Ocp-Apim-Subscription-Key) --------------------------------

resource product 'Microsoft.ApiManagement/service/products@2024-05-01' = {
  parent: apim
  name: 'orders'
  properties: {
    displayName: 'Orders'
    description: 'Access to the Orders API. Callers also need an Entra ID token with an Orders app role.'
    subscriptionRequired: true
    approvalRequired: false
    state: 'published'
  }
}

resource productApi 'Microsoft.ApiManagement/service/products/apis@2024-05-01' = {
  parent: product
  name: ordersApi.name
}

// One subscription per caller, so one key can be revoked without breaking the other.
// Tracing stays off: a trace would show policy internals to whoever holds the key.
resource functionAppSubscription 'Microsoft.ApiManagement/service/subscriptions@2024-05-01' = {
  parent: apim
  name: 'function-app'
  properties: {
    displayName: 'Function App'
    scope: '/products/${product.name}'
    state: 'active'
    allowTracing: false
  }
}

resource logicAppSubscription 'Microsoft.ApiManagement/service/subscriptions@2024-05-01' = if (createLogicAppSubscription) {
  parent: apim
  name: 'logic-app'
  properties: {
    displayName: 'Logic App'
    scope: '/products/${product.name}'
    state: 'active'
    allowTracing: false
  }
}

// ---- Gateway logs to Application Insights (Entra ID auth) -----------------------------------

// Monitoring Metrics Publisher (3913510d-42f4-4e42-8a64-420c390055eb) on the App Insights
// resource: the gateway's system-assigned identity sends request logs there; local auth is off.
resource apimCanPublishTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, apim.id, '3913510d-42f4-4e42-8a64-420c390055eb')
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')
    principalId: apim.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The logger keeps the connection string in a named value: given inline, APIM would create a new
// hidden named value on every deployment. The connection string is not a credential here
// (ingestion needs an Entra token).
resource appInsightsConnectionString 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = {
  parent: apim
  name: 'appinsights-connection-string'
  properties: {
    displayName: 'appinsights-connection-string'
    value: appInsights.properties.ConnectionString
    secret: false
  }
}

resource logger 'Microsoft.ApiManagement/service/loggers@2024-05-01' = {
  parent: apim
  name: 'appinsights'
  properties: {
    loggerType: 'applicationInsights'
    resourceId: appInsights.id
    credentials: {
      connectionString: '{{${appInsightsConnectionString.properties.displayName}}}'
      identityClientId: 'SystemAssigned'
    }
  }
  dependsOn: [
    apimCanPublishTelemetry
  ]
}

// Every request (sampling 100%) with W3C trace context, so a Function App call and its gateway
// request share one operation in App Insights. Headers and bodies are not logged: they carry the
// bearer token and the subscription key.
resource diagnostics 'Microsoft.ApiManagement/service/diagnostics@2024-05-01' = {
  parent: apim
  name: 'applicationinsights'
  properties: {
    loggerId: logger.id
    alwaysLog: 'allErrors'
    httpCorrelationProtocol: 'W3C'
    verbosity: 'information'
    logClientIp: false
    sampling: {
      samplingType: 'fixed'
      percentage: 100
    }
  }
}

// ---- Sample backend (only when no backendServiceUrl is given) ----------------------------------

var sampleBackendPath = 'sample-backend/orders'

module sampleBackend 'sample-backend.bicep' = if (useSampleBackend) {
  name: 'apim-sample-backend'
  params: {
    apimName: apim.name
    path: sampleBackendPath
    operations: api.operations
    backendClientId: sampleBackendClientId
    backendAppIdUri: backendAppIdUri
  }
  // Its policy also uses the service's named values tenant-id and apim-backend-client-id.
  dependsOn: [
    namedValue
  ]
}

output serviceName string = apim.name
output gatewayUrl string = apim.properties.gatewayUrl
// What the Function App calls: APIM_BASE_URL.
output apiBaseUrl string = '${apim.properties.gatewayUrl}/${api.path}'
output functionAppSubscriptionName string = functionAppSubscription.name
output logicAppSubscriptionName string = createLogicAppSubscription ? logicAppSubscription.name : ''
