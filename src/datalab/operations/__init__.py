"""Operating the server: Prometheus metrics, request ids, the readiness probe."""
