"""Per-organization webhooks: signed event deliveries to an HTTP(S) endpoint, retried with backoff."""
