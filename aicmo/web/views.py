"""Rendering: the Jinja2 templates shipped in the package, their filters, and the inline
SVG chart of a campaign's daily metrics (no JavaScript, nothing from a CDN)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from aicmo.ops.users import Role, User
from aicmo.web.security import read_session, write_session_cookie

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def ago(value: str | datetime | None) -> str:
    if value is None:
        return "-"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    seconds = (datetime.now(UTC) - when).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    for limit, unit, size in ((60, "s", 1), (3600, "m", 60), (86400, "h", 3600)):
        if seconds < limit:
            text = f"{seconds / size:.0f}{unit}"
            break
    else:
        text = f"{seconds / 86400:.1f}d"
    return f"in {text}" if future else f"{text} ago"


templates.env.filters["ago"] = ago


def render(
    request: Request, name: str, user: User | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    session = read_session(request)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "can_review": user is not None and user.allows(Role.REVIEWER),
            "can_operate": user is not None and user.allows(Role.OPERATOR),
            "csrf_token": session.csrf,
            "flash": request.query_params.get("msg"),
            **context,
        },
        status_code=status_code,
    )
    write_session_cookie(request, response)
    response.headers["Cache-Control"] = "no-store"
    return response


SERIES = (
    ("messages_published", "published", "#2a7"),
    ("messages_drafted", "drafted", "#57c"),
    ("messages_rejected", "rejected", "#c55"),
    ("leads_captured", "leads", "#d90"),
)
# What happened to the day's email (provider events, unsubscribes, clicks).
OUTCOME_SERIES = (
    ("email_sent", "sent", "#2a7"),
    ("delivered", "delivered", "#57c"),
    ("opened", "opened", "#999"),
    ("clicked", "clicked", "#d90"),
    ("bounced_hard", "hard bounces", "#c55"),
    ("bounced_soft", "soft bounces", "#e9a"),
    ("complained", "complaints", "#a0a"),
    ("unsubscribed", "unsubscribed", "#555"),
)


def metrics_chart(
    rows: list[dict[str, Any]],
    width: int = 720,
    height: int = 220,
    series: tuple[tuple[str, str, str], ...] = SERIES,
    label: str = "daily metrics",
) -> Markup:
    """A line chart of the daily metrics as an inline SVG (one line per series)."""
    if not rows:
        return Markup('<p class="muted">no daily metrics collected yet</p>')
    left, right, top, bottom = 40, 110, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(1, *(int(r[key]) for r in rows for key, _, _ in series))
    step = plot_w / max(1, len(rows) - 1)

    def x(i: int) -> float:
        return left + (i * step if len(rows) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h - (v / peak) * plot_h

    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    for i in (0, len(rows) - 1):
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle" font-size="11">'
            f"{escape(rows[i]['date'])}</text>"
        )
    for n, (key, name, colour) in enumerate(series):
        points = " ".join(f"{x(i):.1f},{y(int(r[key])):.1f}" for i, r in enumerate(rows))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
            f"<title>{name}</title></polyline>"
        )
        for i, r in enumerate(rows):
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(int(r[key])):.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(r['date'])} {name}: {int(r[key])}</title></circle>"
            )
        ly = top + 14 + n * 18
        parts.append(
            f'<rect x="{width - right + 12}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{width - right + 28}" y="{ly}" font-size="12">{name}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
