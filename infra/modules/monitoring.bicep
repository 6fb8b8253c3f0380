// Log Analytics + workspace-based Application Insights with local (instrumentation-key) auth
// disabled: ingestion only accepts Entra ID tokens, from identities holding Monitoring Metrics
// Publisher (see rbac.bicep). The app and the host authenticate with
// APPLICATIONINSIGHTS_AUTHENTICATION_STRING, so the connection string alone cannot be used to send
// (or spoof) telemetry.

@description('Location of the resources.')
param location string

@description('Tags for every resource.')
param tags object

@description('Short unique suffix for resource names.')
param resourceToken string

@description('Days to keep logs.')
@minValue(30)
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      // Queries and ingestion with Entra ID only (no workspace shared keys).
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    // Entra-authenticated ingestion only.
    DisableLocalAuth: true
  }
}

output appInsightsName string = appInsights.name
output workspaceName string = workspace.name
