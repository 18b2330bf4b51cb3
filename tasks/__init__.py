"""The Celery app (``celery -A tasks worker``) and the thin task wrappers around aicmo/."""

from tasks.celery_app import app

__all__ = ["app"]
