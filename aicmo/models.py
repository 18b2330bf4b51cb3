"""Every table, imported in one place so Alembic and tests see the whole metadata."""

from aicmo.cam.models import (
    Campaign,
    CampaignMetrics,
    Lead,
    OrchestratorRun,
    OutreachMessage,
    Suppression,
)
from aicmo.cam.outcomes.models import EmailEvent, SendingBrake
from aicmo.db import Base
from aicmo.gateways.accounts import SocialAccount
from aicmo.ops.users import WebApiToken, WebUser
from aicmo.orchestration.models import AOLAction, AOLControl, AOLExecutionLog

metadata = Base.metadata

__all__ = [
    "AOLAction",
    "AOLControl",
    "AOLExecutionLog",
    "Campaign",
    "CampaignMetrics",
    "EmailEvent",
    "Lead",
    "OrchestratorRun",
    "OutreachMessage",
    "SendingBrake",
    "SocialAccount",
    "Suppression",
    "WebApiToken",
    "WebUser",
    "metadata",
]
