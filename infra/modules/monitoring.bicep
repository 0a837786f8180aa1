// Log Analytics workspace + workspace-based Application Insights. Local (instrumentation-key) auth is
// off: the apps send telemetry with their managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING
// + Monitoring Metrics Publisher, granted in rbac.bicep).

@description('Name of the Log Analytics workspace.')
param workspaceName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Azure region.')
param location string

@description('Days Log Analytics keeps data.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Tags applied to both resources.')
param tags object = {}

module workspace 'br/public:avm/res/operational-insights/workspace:0.11.1' = {
  name: 'workspace-${workspaceName}'
  params: {
    name: workspaceName
    location: location
    tags: tags
    dataRetention: retentionInDays
  }
}

module appInsights 'br/public:avm/res/insights/component:0.6.0' = {
  name: 'appinsights-${appInsightsName}'
  params: {
    name: appInsightsName
    location: location
    tags: tags
    workspaceResourceId: workspace.outputs.resourceId
    disableLocalAuth: true
  }
}

output workspaceId string = workspace.outputs.resourceId
output appInsightsId string = appInsights.outputs.resourceId
output appInsightsName string = appInsights.outputs.name
// Not a credential: with local auth disabled, ingestion also needs an Entra token.
output connectionString string = appInsights.outputs.connectionString
