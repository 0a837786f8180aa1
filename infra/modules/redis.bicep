// Azure Managed Redis (Microsoft.Cache/redisEnterprise). Azure Cache for Redis is retiring (all SKUs
// announced 2025-10; Basic/Standard/Premium off 2028-09-30), so new deployments use Managed Redis.
// TLS only: the database speaks the encrypted protocol alone (there is no plaintext port) and the
// cluster refuses TLS below 1.2. The connection URL (rediss://, with the access key) is written straight
// into Key Vault here, so the key never leaves this module as an output.

@description('Name of the Managed Redis cluster.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the cluster.')
param tags object = {}

@description('Managed Redis SKU. Balanced_B0 is the smallest; coordination data (rate limits, locks, metrics) is tiny.')
@allowed([
  'Balanced_B0'
  'Balanced_B1'
  'Balanced_B3'
  'Balanced_B5'
  'MemoryOptimized_M10'
  'ComputeOptimized_X3'
])
param skuName string = 'Balanced_B0'

@description('Replicate across nodes. Redis holds coordination state only (the database is the record), so a non-HA cache is acceptable for small deployments.')
@allowed([
  'Enabled'
  'Disabled'
])
param highAvailability string = 'Enabled'

@description('Key Vault that receives the "redis-url" secret.')
param keyVaultName string

@description('Name of the Key Vault secret holding the rediss:// URL.')
param redisUrlSecretName string = 'redis-url'

resource cluster 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    minimumTlsVersion: '1.2'
    highAvailability: highAvailability
    // Flex apps without VNet integration connect over the public endpoint (TLS + access key).
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: cluster
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: 10000
    // One endpoint that non-cluster-aware clients (redis-py Redis.from_url) can use.
    clusteringPolicy: 'EnterpriseCluster'
    // Rate-limit and lock keys must never be evicted to make room; they all carry TTLs.
    evictionPolicy: 'NoEviction'
    // REDIS_URL carries a password; Entra tokens for redis-py would need a credential provider.
    accessKeysAuthentication: 'Enabled'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource redisUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  #checkov:skip=CKV_AZURE_41:The URL changes only when the access key is regenerated, which redeploys this secret.
  #checkov:skip=CKV_AZURE_114:Content type is not meaningful for a connection URL.
  parent: vault
  name: redisUrlSecretName
  properties: {
    value: 'rediss://:${database.listKeys().primaryKey}@${cluster.properties.hostName}:${database.properties.port}/0'
  }
}

output id string = cluster.id
output hostName string = cluster.properties.hostName
output port int = database.properties.port
output redisUrlSecretName string = redisUrlSecret.name
