"""`aicmo serve`: the HTTP service (webhooks, console, JSON API, /metrics)."""

from __future__ import annotations

import click

from aicmo.cli.base import main


@main.command()
@click.option("--host", help="Address to bind (default AICMO_WEB_HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default AICMO_WEB_PORT, 8000).")
@click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Processes."
)
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Serve the console, the JSON API, the lead webhooks and /metrics with uvicorn.

    Put it behind a TLS-terminating proxy (see the README); only /healthz, /readyz, the
    signed webhooks and /metrics answer without a login.
    """
    import uvicorn

    from aicmo.config import get_settings

    settings = get_settings()
    uvicorn.run(
        "aicmo.web.app:create_app",
        factory=True,
        host=host or settings.web_host,
        port=port or settings.web_port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips=settings.web_forwarded_allow_ips,
        server_header=False,
        log_level="info",
    )
