#!/usr/bin/env bash
# Write the workers' secrets into Key Vault from environment variables, then restart the apps so their
# @Microsoft.KeyVault(...) app settings resolve again. Values never appear on a command line (they are
# piped to az) and never pass through a Bicep deployment. Unset or empty variables are skipped, so the
# script can run after every `azd provision` (azure.yaml postprovision hook) without clearing anything.
#
#   AZURE_KEY_VAULT_NAME=kv-... EXOTEL_TOKEN=... scripts/set_secrets.sh
#   (under azd the deployment outputs and `azd env set` values are already in the environment)
#
# Needs: az CLI logged in as a principal with Key Vault Secrets Officer (rbac.bicep grants it to
# developerPrincipalId). redis-url is not here: redis.bicep writes it from the cache's own key.
set -euo pipefail

: "${AZURE_KEY_VAULT_NAME:?set AZURE_KEY_VAULT_NAME (a deployment output)}"

# app setting (= environment variable read here) -> Key Vault secret name
secrets=(
    "DATABASE_URL=database-url"
    "SUPABASE_SERVICE_ROLE_KEY=supabase-service-role-key"
    "EXOTEL_API_KEY=exotel-api-key"
    "EXOTEL_TOKEN=exotel-token"
    "EXOTEL_CALLBACK_SECRET=exotel-callback-secret"
    "OPENAI_API_KEY=openai-api-key"
    "EMAIL_ENCRYPTION_KEY=email-encryption-key"
    "EMAIL_LEGACY_ENCRYPTION_KEY=email-legacy-encryption-key"
)

changed=0
for pair in "${secrets[@]}"; do
    variable="${pair%%=*}"
    secret="${pair#*=}"
    value="${!variable:-}"
    if [[ -z "$value" ]]; then
        continue
    fi
    printf '%s' "$value" | az keyvault secret set --vault-name "$AZURE_KEY_VAULT_NAME" --name "$secret" \
        --file /dev/stdin --encoding utf-8 --output none
    echo "set_secrets.sh: $secret updated from \$$variable" >&2
    changed=1
done

if [[ "$changed" == 1 && -n "${AZURE_RESOURCE_GROUP:-}" ]]; then
    for app in "${EMAIL_FUNCTION_APP_NAME:-}" "${WHATSAPP_FUNCTION_APP_NAME:-}" "${TRANSCRIPTION_FUNCTION_APP_NAME:-}"; do
        [[ -n "$app" ]] || continue
        az functionapp restart --resource-group "$AZURE_RESOURCE_GROUP" --name "$app" --output none
        echo "set_secrets.sh: restarted $app" >&2
    done
fi
