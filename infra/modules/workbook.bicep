// Azure Monitor workbook "Banxway workers", built from the KQL files in ../queries (the same queries
// operators run by hand in Logs). Every panel follows the workbook's time-range picker.

@description('Azure region.')
param location string

@description('Tags applied to the workbook.')
param tags object = {}

@description('Resource ID of the Application Insights component the panels query.')
param appInsightsId string

@description('Display name of the workbook.')
param displayName string = 'Banxway workers'

var panels = [
  {
    name: 'throughput'
    title: 'Throughput: jobs per 5 minutes by queue and outcome'
    query: loadTextContent('../queries/throughput.kql')
    visualization: 'timechart'
  }
  {
    name: 'failures'
    title: 'Failures by queue, outcome and reason'
    query: loadTextContent('../queries/failures_by_queue_and_reason.kql')
    visualization: 'table'
  }
  {
    name: 'durations'
    title: 'Job duration percentiles (seconds)'
    query: loadTextContent('../queries/job_duration_percentiles.kql')
    visualization: 'timechart'
  }
  {
    name: 'backlog'
    title: 'Queue depth and oldest message age'
    query: loadTextContent('../queries/queue_backlog.kql')
    visualization: 'timechart'
  }
  {
    name: 'poison'
    title: 'Dead letters waiting (poison queue depth)'
    query: loadTextContent('../queries/poison_depth.kql')
    visualization: 'timechart'
  }
  {
    name: 'ratelimit'
    title: 'Rate-limit waits'
    query: loadTextContent('../queries/ratelimit_waits.kql')
    visualization: 'timechart'
  }
  {
    name: 'polllag'
    title: 'Per-inbox poll lag (seconds)'
    query: loadTextContent('../queries/email_poll_lag.kql')
    visualization: 'timechart'
  }
  {
    name: 'reconciliation'
    title: 'WhatsApp messages stuck in reconciliation'
    query: loadTextContent('../queries/reconciliation_pending.kql')
    visualization: 'timechart'
  }
]

var header = [
  {
    type: 1
    name: 'header'
    content: {
      json: '## Banxway workers\nJobs, failures, backlog and limits of the email, WhatsApp and transcription apps. Queries: infra/queries/*.kql.'
    }
  }
  {
    type: 9
    name: 'parameters'
    content: {
      version: 'KqlParameterItem/1.0'
      parameters: [
        {
          id: 'c0b4f8a2-6d1e-4b8f-9a51-3f0d8f1e2a77'
          version: 'KqlParameterItem/1.0'
          name: 'TimeRange'
          type: 4
          isRequired: true
          value: {
            durationMs: 86400000
          }
          typeSettings: {
            selectableValues: [
              {
                durationMs: 3600000
              }
              {
                durationMs: 14400000
              }
              {
                durationMs: 86400000
              }
              {
                durationMs: 604800000
              }
            ]
          }
        }
      ]
    }
  }
]

var panelItems = [
  for panel in panels: {
    type: 3
    name: panel.name
    content: {
      version: 'KqlItem/1.0'
      title: panel.title
      query: panel.query
      size: 0
      timeContextFromParameter: 'TimeRange'
      queryType: 0
      resourceType: 'microsoft.insights/components'
      visualization: panel.visualization
    }
  }
]

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat(header, panelItems)
  fallbackResourceIds: [
    appInsightsId
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appInsightsId, 'banxway-workers-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: string(workbookContent)
  }
}

output id string = workbook.id
