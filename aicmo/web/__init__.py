"""The ASGI app behind `aicmo serve`: lead webhooks, the console, the JSON API and /metrics."""
