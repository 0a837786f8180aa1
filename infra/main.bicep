// Banxway workers: three Flex Consumption function apps (email, WhatsApp, transcription) from one
// package, with one managed identity, identity-based storage, Key Vault references for every secret,
// Azure Managed Redis (TLS only), Log Analytics + Application Insights (OpenTelemetry), alerts and a
// workbook. Deploy with `az deployment group create` or `azd up` (docs/deploy.md).
targetScope = 'resourceGroup'

// ---------------------------------------------------------------- environment

@description('Environment name (azd AZURE_ENV_NAME); part of every resource name.')
@minLength(1)
@maxLength(24)
param environmentName string

@description('Azure region of all resources. Flex Consumption must be available there; maximumInstanceCount below 40 only in preview regions (westeurope, australiaeast, westus2).')
param location string = resourceGroup().location

@description('Object ID of a developer or CI principal to grant data access (azd AZURE_PRINCIPAL_ID); empty for none.')
param developerPrincipalId string = ''

@description('Type of developerPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param developerPrincipalType string = 'User'

@description('Python version of the Flex runtime (the project targets 3.11).')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

// ---------------------------------------------------------------- queues and schedules

@description('Queue of email poll jobs (one message = poll one inbox).')
param emailQueueName string = 'email-processing'

@description('Queue of WhatsApp sends, normal lane.')
param whatsappQueueName string = 'whatsapp-processing'

@description('Queue of WhatsApp sends, high-priority lane.')
param whatsappPriorityQueueName string = 'whatsapp-processing-high'

@description('Queue of call-recording transcriptions.')
param transcriptionQueueName string = 'transcription-processing'

@description('NCRONTAB schedule (UTC, seconds first) of the timer that fans out inbox polls. Seed: every 30 s.')
param emailPollSchedule string = '*/30 * * * * *'

@description('EMAIL_POLL_INTERVAL in milliseconds, as the seed named it. Keep it equal to the schedule\'s period.')
@minValue(1000)
param emailPollIntervalMs int = 30000

// ---------------------------------------------------------------- scaling (seed: min 1/2/1, concurrency 5/10/3)

@description('Email app: always-ready instances of the inbox-poll queue function (seed minimum: 1).')
@minValue(0)
@maxValue(20)
param emailAlwaysReady int = 1

@description('Email app: maximum instances. Documented floor 40; 1-39 only where the <40 preview is enabled (seed max: 5, enforced in code through Redis).')
@minValue(1)
@maxValue(1000)
param emailMaximumInstanceCount int = 40

@description('Email app: instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param emailInstanceMemoryMB int = 2048

@description('Email app: queues batchSize. Concurrency per instance = batchSize + newBatchThreshold (seed: 5).')
@minValue(1)
@maxValue(32)
param emailQueueBatchSize int = 1

@description('Email app: queues newBatchThreshold (seed total 5 = 1 + 4: refill one at a time, never more than 5 in flight).')
@minValue(0)
@maxValue(64)
param emailQueueNewBatchThreshold int = 4

@description('WhatsApp app: always-ready instances of the normal-lane send function (seed minimum: 2).')
@minValue(0)
@maxValue(20)
param whatsappAlwaysReady int = 2

@description('WhatsApp app: always-ready instances of the high-priority lane (0 = a cold start on the first priority send after idling).')
@minValue(0)
@maxValue(20)
param whatsappPriorityAlwaysReady int = 0

@description('WhatsApp app: maximum instances. Documented floor 40; 1-39 only where the <40 preview is enabled (seed max: 10; the Exotel send rate is enforced in code through Redis).')
@minValue(1)
@maxValue(1000)
param whatsappMaximumInstanceCount int = 40

@description('WhatsApp app: instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param whatsappInstanceMemoryMB int = 2048

@description('WhatsApp app: queues batchSize (seed total 10 = 5 + 5).')
@minValue(1)
@maxValue(32)
param whatsappQueueBatchSize int = 5

@description('WhatsApp app: queues newBatchThreshold.')
@minValue(0)
@maxValue(64)
param whatsappQueueNewBatchThreshold int = 5

@description('Transcription app: always-ready instances of the transcription function (seed minimum: 1).')
@minValue(0)
@maxValue(20)
param transcriptionAlwaysReady int = 1

@description('Transcription app: maximum instances. Documented floor 40; 1-39 only where the <40 preview is enabled (seed max: 3; the global cap on concurrent transcriptions is enforced in code through Redis).')
@minValue(1)
@maxValue(1000)
param transcriptionMaximumInstanceCount int = 40

@description('Transcription app: instance memory in MB (4096 = 2 cores for audio transcoding).')
@allowed([
  512
  2048
  4096
])
param transcriptionInstanceMemoryMB int = 4096

@description('Transcription app: queues batchSize (seed total 3 = 1 + 2: long jobs, so refill one at a time).')
@minValue(1)
@maxValue(32)
param transcriptionQueueBatchSize int = 1

@description('Transcription app: queues newBatchThreshold.')
@minValue(0)
@maxValue(64)
param transcriptionQueueNewBatchThreshold int = 2

// ---------------------------------------------------------------- outside services (non-secret)

@description('Database access: direct Postgres (DATABASE_URL) or the Supabase pair (SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY).')
@allowed([
  'postgres'
  'supabase'
])
param storeBackend string = 'postgres'

@description('Supabase project URL (storeBackend = supabase).')
param supabaseUrl string = ''

@description('Postgres pool size per worker process.')
@minValue(1)
@maxValue(50)
param databasePoolMaxSize int = 4

@description('Exotel account SID.')
param exotelSid string = ''

@description('Exotel API base URL (region-specific, e.g. https://api.in.exotel.com).')
param exotelApiUrl string = 'https://api.exotel.com'

@description('Exotel WhatsApp sender number (E.164).')
param exotelWhatsappNumber string = ''

@description('OpenAI-compatible base URL (empty: api.openai.com).')
param openaiBaseUrl string = ''

@description('URL Exotel posts WhatsApp status callbacks to (the whatsapp_status_callback function URL, known after the first deployment); empty to send without callbacks.')
param exotelStatusCallbackUrl string = ''

@description('Blob container for email attachments.')
param emailAttachmentsContainerName string = 'email-attachments'

@description('Extra non-secret settings for the email app (tuning knobs of shared/settings.py, e.g. {"EMAIL_BACKFILL_DAYS": "14"}). Settings changed outside Bicep are lost on the next deployment, so put them here.')
param emailExtraSettings object = {}

@description('Extra non-secret settings for the WhatsApp app (e.g. {"WHATSAPP_RATE_PER_S": "3.3"}).')
param whatsappExtraSettings object = {}

@description('Extra non-secret settings for the transcription app (e.g. {"TRANSCRIPTION_MODEL": "whisper-1"}).')
param transcriptionExtraSettings object = {}

@description('Also reference the "email-legacy-encryption-key" secret (only while old credentials are re-encrypted).')
param useLegacyEmailKey bool = false

// ---------------------------------------------------------------- Redis, monitoring, alerts

@description('Azure Managed Redis SKU.')
@allowed([
  'Balanced_B0'
  'Balanced_B1'
  'Balanced_B3'
  'Balanced_B5'
  'MemoryOptimized_M10'
  'ComputeOptimized_X3'
])
param redisSkuName string = 'Balanced_B0'

@description('Managed Redis high availability.')
@allowed([
  'Enabled'
  'Disabled'
])
param redisHighAvailability string = 'Enabled'

@description('E-mail address for alerts (empty: alerts fire without notification).')
param alertEmail string = ''

@description('Alert when the oldest message of a job queue is older than this (seconds).')
@minValue(30)
param queueAgeThresholdSeconds int = 600

@description('Alert when this percentage of a queue\'s jobs fail (per 5 minutes, at least 20 jobs).')
@minValue(1)
@maxValue(100)
param failureRateThresholdPercent int = 10

@description('Alert when senders waited more than this many seconds for the rate limiter within 15 minutes.')
@minValue(1)
param rateLimitWaitThresholdSeconds int = 900

@description('Alert when an inbox has not been polled for this many seconds.')
@minValue(60)
param pollLagThresholdSeconds int = 600

// ---------------------------------------------------------------- names

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
  application: 'banxway-workers'
}
var keyVaultName = 'kv-${resourceToken}'

// Function names as the code registers them. Each worker function runs in exactly one app; the ops
// endpoints (health, health_ready, metrics) run in all three and are never listed here.
var workerFunctions = {
  email: [
    'email_schedule_polls'
    'email_poll_inbox'
  ]
  whatsapp: [
    'whatsapp_send'
    'whatsapp_send_priority'
    'whatsapp_status_callback'
  ]
  transcription: [
    'transcribe_recording'
  ]
}

// ---------------------------------------------------------------- app settings
// Secrets are Key Vault references only; the vault resolves them with the apps' identity. Extra settings
// come first in each union, so they can tune knobs but never replace a setting defined here.

// Every setting a binding names as %SETTING% is common: the host resolves binding expressions while
// indexing, for disabled functions too, so each app needs all of them (tests/infra/test_binding_settings.py).
var commonSettings = {
  EMAIL_QUEUE_NAME: emailQueueName
  WHATSAPP_QUEUE_NAME: whatsappQueueName
  WHATSAPP_PRIORITY_QUEUE_NAME: whatsappPriorityQueueName
  TRANSCRIPTION_QUEUE_NAME: transcriptionQueueName
  EMAIL_POLL_SCHEDULE: emailPollSchedule
  REDIS_URL: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=redis-url)'
  DATABASE_POOL_MAX_SIZE: string(databasePoolMaxSize)
}

var storeSettings = (storeBackend == 'postgres') ? {
  DATABASE_URL: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=database-url)'
} : {
  SUPABASE_URL: supabaseUrl
  SUPABASE_SERVICE_ROLE_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=supabase-service-role-key)'
}

var exotelSettings = {
  EXOTEL_SID: exotelSid
  EXOTEL_API_URL: exotelApiUrl
  EXOTEL_API_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=exotel-api-key)'
  EXOTEL_TOKEN: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=exotel-token)'
}

var legacyEmailKeySettings = useLegacyEmailKey ? {
  EMAIL_LEGACY_ENCRYPTION_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=email-legacy-encryption-key)'
} : {}

var emailSettings = {
  EMAIL_WORKER_CONCURRENCY: string(emailQueueBatchSize + emailQueueNewBatchThreshold)
  EMAIL_POLL_INTERVAL: string(emailPollIntervalMs)
  EMAIL_ENCRYPTION_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=email-encryption-key)'
  EMAIL_ATTACHMENTS_CONTAINER: emailAttachmentsContainerName
}

var whatsappSettings = {
  WHATSAPP_WORKER_CONCURRENCY: string(whatsappQueueBatchSize + whatsappQueueNewBatchThreshold)
  EXOTEL_WHATSAPP_NUMBER: exotelWhatsappNumber
  EXOTEL_STATUS_CALLBACK_URL: exotelStatusCallbackUrl
  EXOTEL_CALLBACK_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=exotel-callback-secret)'
}

var transcriptionSettings = {
  TRANSCRIPTION_WORKER_CONCURRENCY: string(transcriptionQueueBatchSize + transcriptionQueueNewBatchThreshold)
  OPENAI_API_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=openai-api-key)'
  OPENAI_BASE_URL: openaiBaseUrl
}

// ---------------------------------------------------------------- shared resources

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    attachmentsContainerName: emailAttachmentsContainerName
    queueNames: [
      emailQueueName
      whatsappQueueName
      whatsappPriorityQueueName
      transcriptionQueueName
    ]
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: keyVaultName
    location: location
    tags: tags
  }
}

module redis 'modules/redis.bicep' = {
  name: 'redis'
  params: {
    name: 'redis-${resourceToken}'
    location: location
    tags: tags
    skuName: redisSkuName
    highAvailability: redisHighAvailability
    keyVaultName: keyVault.outputs.name
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  params: {
    appPrincipalId: identity.outputs.principalId
    developerPrincipalId: developerPrincipalId
    developerPrincipalType: developerPrincipalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

// ---------------------------------------------------------------- the three apps

module emailApp 'modules/functionapp.bicep' = {
  name: 'app-email'
  dependsOn: [
    rbac
  ]
  params: {
    name: 'func-email-${resourceToken}'
    planName: 'plan-email-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'email'
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.connectionString
    disabledFunctions: concat(workerFunctions.whatsapp, workerFunctions.transcription)
    alwaysReady: [
      {
        name: 'function:email_poll_inbox'
        instanceCount: emailAlwaysReady
      }
    ]
    maximumInstanceCount: emailMaximumInstanceCount
    instanceMemoryMB: emailInstanceMemoryMB
    queueBatchSize: emailQueueBatchSize
    queueNewBatchThreshold: emailQueueNewBatchThreshold
    pythonVersion: pythonVersion
    appSettings: union(emailExtraSettings, commonSettings, storeSettings, emailSettings, legacyEmailKeySettings)
  }
}

module whatsappApp 'modules/functionapp.bicep' = {
  name: 'app-whatsapp'
  dependsOn: [
    rbac
  ]
  params: {
    name: 'func-whatsapp-${resourceToken}'
    planName: 'plan-whatsapp-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'whatsapp'
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.connectionString
    disabledFunctions: concat(workerFunctions.email, workerFunctions.transcription)
    // A group with 0 always-ready instances is left out rather than listed with 0.
    alwaysReady: concat([
      {
        name: 'function:whatsapp_send'
        instanceCount: whatsappAlwaysReady
      }
    ], (whatsappPriorityAlwaysReady > 0) ? [
      {
        name: 'function:whatsapp_send_priority'
        instanceCount: whatsappPriorityAlwaysReady
      }
    ] : [])
    maximumInstanceCount: whatsappMaximumInstanceCount
    instanceMemoryMB: whatsappInstanceMemoryMB
    queueBatchSize: whatsappQueueBatchSize
    queueNewBatchThreshold: whatsappQueueNewBatchThreshold
    pythonVersion: pythonVersion
    appSettings: union(whatsappExtraSettings, commonSettings, storeSettings, exotelSettings, whatsappSettings)
  }
}

module transcriptionApp 'modules/functionapp.bicep' = {
  name: 'app-transcription'
  dependsOn: [
    rbac
  ]
  params: {
    name: 'func-transcribe-${resourceToken}'
    planName: 'plan-transcribe-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'transcription'
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.connectionString
    disabledFunctions: concat(workerFunctions.email, workerFunctions.whatsapp)
    alwaysReady: [
      {
        name: 'function:transcribe_recording'
        instanceCount: transcriptionAlwaysReady
      }
    ]
    maximumInstanceCount: transcriptionMaximumInstanceCount
    instanceMemoryMB: transcriptionInstanceMemoryMB
    queueBatchSize: transcriptionQueueBatchSize
    queueNewBatchThreshold: transcriptionQueueNewBatchThreshold
    pythonVersion: pythonVersion
    appSettings: union(transcriptionExtraSettings, commonSettings, storeSettings, exotelSettings, transcriptionSettings)
  }
}

// ---------------------------------------------------------------- alerts and workbook

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    namePrefix: 'banxway-${resourceToken}'
    alertEmail: alertEmail
    queueAgeThresholdSeconds: queueAgeThresholdSeconds
    failureRateThresholdPercent: failureRateThresholdPercent
    rateLimitWaitThresholdSeconds: rateLimitWaitThresholdSeconds
    pollLagThresholdSeconds: pollLagThresholdSeconds
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  params: {
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
  }
}

// ---------------------------------------------------------------- outputs (azd env values; scripts/settings_from_deployment.py)

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output AZURE_CLIENT_ID string = identity.outputs.clientId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output REDIS_HOST_NAME string = redis.outputs.hostName
output REDIS_PORT int = redis.outputs.port
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output EMAIL_FUNCTION_APP_NAME string = emailApp.outputs.name
output WHATSAPP_FUNCTION_APP_NAME string = whatsappApp.outputs.name
output TRANSCRIPTION_FUNCTION_APP_NAME string = transcriptionApp.outputs.name
output EMAIL_QUEUE_NAME string = emailQueueName
output WHATSAPP_QUEUE_NAME string = whatsappQueueName
output WHATSAPP_PRIORITY_QUEUE_NAME string = whatsappPriorityQueueName
output TRANSCRIPTION_QUEUE_NAME string = transcriptionQueueName
output EMAIL_POLL_SCHEDULE string = emailPollSchedule
output EMAIL_POLL_INTERVAL string = string(emailPollIntervalMs)
output EMAIL_WORKER_CONCURRENCY string = string(emailQueueBatchSize + emailQueueNewBatchThreshold)
output WHATSAPP_WORKER_CONCURRENCY string = string(whatsappQueueBatchSize + whatsappQueueNewBatchThreshold)
output TRANSCRIPTION_WORKER_CONCURRENCY string = string(transcriptionQueueBatchSize + transcriptionQueueNewBatchThreshold)
output DATABASE_POOL_MAX_SIZE string = string(databasePoolMaxSize)
output STORE_BACKEND string = storeBackend
output SUPABASE_URL string = supabaseUrl
output EXOTEL_SID string = exotelSid
output EXOTEL_API_URL string = exotelApiUrl
output EXOTEL_WHATSAPP_NUMBER string = exotelWhatsappNumber
output OPENAI_BASE_URL string = openaiBaseUrl
output EMAIL_ATTACHMENTS_CONTAINER string = emailAttachmentsContainerName
output EXOTEL_STATUS_CALLBACK_URL string = exotelStatusCallbackUrl
