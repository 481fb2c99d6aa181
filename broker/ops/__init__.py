"""What operators and auditors run: queue status and parking, reports, dashboard, audit commands."""
