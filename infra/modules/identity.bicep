// One user-assigned managed identity shared by the three function apps: storage (host + queues +
// deployment package), Key Vault references and App Insights ingestion all authenticate with it.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity-${name}'
  params: {
    name: name
    location: location
    tags: tags
  }
}

output resourceId string = identity.outputs.resourceId
output principalId string = identity.outputs.principalId
output clientId string = identity.outputs.clientId
output name string = identity.outputs.name
