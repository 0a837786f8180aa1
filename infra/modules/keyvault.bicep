// Key Vault for every secret the workers read. Apps never see secret values in their settings: they
// hold @Microsoft.KeyVault(...) references that the platform resolves with the apps' managed identity
// (Key Vault Secrets User, granted in rbac.bicep). RBAC authorization only; no access policies.
// Secret values never pass through a deployment: scripts/set_secrets.sh writes them (azd runs it after
// provisioning), except redis-url, which redis.bicep writes from the cache's own key.

@description('Key Vault name (3-24 letters, digits and hyphens).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the vault.')
param tags object = {}

@description('Days a deleted vault or secret can be recovered.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  #checkov:skip=CKV_AZURE_109:Flex apps without VNet integration resolve Key Vault references over the public endpoint; access is Entra ID + RBAC only. Add a VNet + private endpoint to deny by default.
  #checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
