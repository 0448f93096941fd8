"""The alert notifier: SLA records → the right people's Slack, Teams and Standard Webhooks endpoints."""
