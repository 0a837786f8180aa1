// One Flex Consumption function app with its own FC1 plan (Flex allows one app per plan). main.bicep
// uses this module three times (email, WhatsApp, transcription) with the same deployment package; each
// instance enables only its worker's functions plus the ops endpoints, and carries its own instance
// limits and queue concurrency, because host.json queue settings and maximumInstanceCount are app-wide.

@description('Function app name. The host ID is its first 32 characters, so the three apps must differ there (they share one storage account).')
@maxLength(60)
param name string

@description('Name of the app\'s FC1 plan.')
param planName string

@description('Azure region.')
param location string

@description('Tags applied to plan and app.')
param tags object = {}

@description('azd service name (azure.yaml) this app deploys as.')
param serviceName string

@description('Resource ID of the user-assigned identity the app runs as.')
param identityId string

@description('Client ID of that identity (identity-based storage connections and App Insights auth).')
param identityClientId string

@description('Blob endpoint of the host storage account (https://<account>.blob.core.windows.net/).')
param storageBlobEndpoint string

@description('Queue endpoint of the host storage account.')
param storageQueueEndpoint string

@description('Table endpoint of the host storage account.')
param storageTableEndpoint string

@description('URL of the blob container holding the deployment package (the same for all three apps).')
param deploymentContainerUrl string

@description('Application Insights connection string (an identifier, not a credential: local auth is disabled).')
param appInsightsConnectionString string

@description('Worker functions of the other two apps. Each gets AzureWebJobs.<name>.Disabled=true here, so every worker trigger runs in exactly one app; the ops endpoints (health, health_ready, metrics) are never listed.')
param disabledFunctions array

@description('Always-ready (minimum) instances per scale group, e.g. [{ name: \'function:whatsapp_send\', instanceCount: 2 }].')
param alwaysReady array

@description('Most instances the app scales out to. Documented floor 40; below 40 (down to 1) is a preview in some regions (West Europe, Australia East, West US 2).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Instance memory: 512 MB (0.25 core), 2048 MB (1 core) or 4096 MB (2 cores).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Host setting extensions.queues.batchSize: messages fetched per poll. Per-instance concurrency per queue function = batchSize + newBatchThreshold.')
@minValue(1)
@maxValue(32)
param queueBatchSize int

@description('Host setting extensions.queues.newBatchThreshold: fetch the next batch when in-flight messages drop to this.')
@minValue(0)
@maxValue(64)
param queueNewBatchThreshold int

@description('Python version of the Flex runtime.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Worker settings (queue names, schedules, Key Vault references) merged over the platform settings.')
param appSettings object

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  #checkov:skip=CKV_AZURE_225:Zone-redundant Flex plans need at least 2 always-ready instances per scale group (seed minimum is 1); queued jobs wait safely in storage during a zone outage.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  #checkov:skip=CKV_AZURE_17:Exotel status callbacks and health probes cannot present client certificates; HTTP functions use function keys.
  #checkov:skip=CKV_AZURE_222:Public network access is needed for Exotel status callbacks (whatsapp_status_callback).
  #checkov:skip=CKV_AZURE_212:Flex Consumption has no fixed instance pool; minimum instances are alwaysReady per scale group (a parameter).
  #checkov:skip=CKV_AZURE_213:App Service health check does not apply to Flex Consumption (platform-managed instances); /api/health and /api/health/ready serve external probes.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(namedSettings, disabledFunctionSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReady
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Basic-auth publishing is off: deployments (azd, az functionapp deployment) authenticate with Entra ID.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

var platformSettings = {
  // Identity-based host storage: no connection string, no keys.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  AzureWebJobsStorage__tableServiceUri: storageTableEndpoint
  // OpenTelemetry through the Python worker (it calls configure_azure_monitor itself).
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  OTEL_EXPERIMENTAL_RESOURCE_DETECTORS: 'azure_functions'
  // host.json overrides for this app only: per-instance concurrency of each queue function.
  AzureFunctionsJobHost__extensions__queues__batchSize: string(queueBatchSize)
  AzureFunctionsJobHost__extensions__queues__newBatchThreshold: string(queueNewBatchThreshold)
}

// Platform settings last: worker settings can never replace the storage, telemetry or concurrency wiring.
var namedSettings = [
  for setting in items(union(appSettings, platformSettings)): {
    name: setting.key
    value: setting.value
  }
]

// The documented name is AzureWebJobs.<name>.Disabled; App Service on Linux accepts the dots, and the
// runtime also checks AzureWebJobs_<name>_Disabled, the form they take in Linux environment variables.
// Function names must not contain hyphens for this to work on Linux.
var disabledFunctionSettings = [
  for functionName in disabledFunctions: {
    name: 'AzureWebJobs.${functionName}.Disabled'
    value: 'true'
  }
]

output id string = app.id
output name string = app.name
output defaultHostName string = app.properties.defaultHostName
