// Log alerts on the workers' telemetry (App Insights customMetrics), one per failure mode operators must
// act on. The queries live in ../queries/alerts/*.kql; each returns rows (timestamp, dimension, value)
// and the rule aggregates them over its window, split by the dimension (queue, limiter, account).

@description('Azure region of the rules.')
param location string

@description('Tags applied to the rules and the action group.')
param tags object = {}

@description('Resource ID of the Application Insights component the queries run against.')
param appInsightsId string

@description('Name prefix of the rules.')
param namePrefix string

@description('E-mail address that receives alerts (empty: rules fire without notifying anyone).')
param alertEmail string = ''

@description('Turn all rules on or off (e.g. off in a scratch environment).')
param enabled bool = true

@description('Alert when the oldest message of a job queue is older than this many seconds.')
@minValue(30)
param queueAgeThresholdSeconds int = 600

@description('Alert when more than this percentage of a queue\'s jobs dead-letter or fail unexpectedly (per 5 minutes, at least 20 jobs).')
@minValue(1)
@maxValue(100)
param failureRateThresholdPercent int = 10

@description('Alert when senders spent more than this many seconds in total waiting for the rate limiter within 15 minutes.')
@minValue(1)
param rateLimitWaitThresholdSeconds int = 900

@description('Alert when an inbox has not completed a poll for this many seconds (seed polls every 30 s).')
@minValue(60)
param pollLagThresholdSeconds int = 600

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-ops'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'banxwayops'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'ops'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var rules = [
  {
    key: 'dead-letters'
    displayName: 'Banxway: dead letters waiting'
    description: 'A <queue>-poison queue holds messages: jobs were rejected, ran out of retries, or crashed the host too often. Inspect and replay them (docs/deploy.md).'
    severity: 1
    query: loadTextContent('../queries/alerts/dead_letters.kql')
    measure: 'depth'
    timeAggregation: 'Maximum'
    dimension: 'queue'
    threshold: 0
  }
  {
    key: 'queue-age'
    displayName: 'Banxway: queue backlog is old'
    description: 'The oldest message of a job queue waited longer than the threshold: the worker is down, throttled, or capped too low.'
    severity: 2
    query: loadTextContent('../queries/alerts/queue_age.kql')
    measure: 'age_s'
    timeAggregation: 'Maximum'
    dimension: 'queue'
    threshold: queueAgeThresholdSeconds
  }
  {
    key: 'failure-rate'
    displayName: 'Banxway: job failure rate'
    description: 'Too many jobs of a queue dead-letter or fail unexpectedly.'
    severity: 2
    query: loadTextContent('../queries/alerts/failure_rate.kql')
    measure: 'failure_pct'
    timeAggregation: 'Maximum'
    dimension: 'queue'
    threshold: failureRateThresholdPercent
  }
  {
    key: 'ratelimit-saturation'
    displayName: 'Banxway: rate limiter saturated'
    description: 'Senders spend most of their time waiting for the shared Exotel rate limit: sends arrive faster than the account allows.'
    severity: 3
    query: loadTextContent('../queries/alerts/ratelimit_saturation.kql')
    measure: 'wait_s'
    timeAggregation: 'Total'
    dimension: 'limiter'
    threshold: rateLimitWaitThresholdSeconds
  }
  {
    key: 'poll-lag'
    displayName: 'Banxway: inbox poll lag'
    description: 'An inbox has not been polled successfully for longer than the threshold.'
    severity: 2
    query: loadTextContent('../queries/alerts/email_poll_lag.kql')
    measure: 'lag_s'
    timeAggregation: 'Maximum'
    dimension: 'account_id'
    threshold: pollLagThresholdSeconds
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in rules: {
    name: '${namePrefix}-${rule.key}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: rule.displayName
      description: rule.description
      severity: rule.severity
      enabled: enabled
      scopes: [
        appInsightsId
      ]
      evaluationFrequency: 'PT5M'
      windowSize: 'PT15M'
      autoMitigate: true
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: rule.timeAggregation
            metricMeasureColumn: rule.measure
            dimensions: [
              {
                name: rule.dimension
                operator: 'Include'
                values: [
                  '*'
                ]
              }
            ]
            operator: 'GreaterThan'
            threshold: rule.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      actions: {
        actionGroups: [
          actionGroup.id
        ]
      }
    }
  }
]

output ruleNames array = [for (rule, i) in rules: alertRules[i].name]
