"""Every table, imported in one place so Alembic and tests see the whole metadata."""

from aicmo.cam.models import (
    Campaign,
    CampaignMetrics,
    Contact,
    Lead,
    OrchestratorRun,
    OutreachMessage,
    Recipient,
    Suppression,
)
from aicmo.cam.outcomes.models import EmailEvent, SendingBrake
from aicmo.db import Base
from aicmo.gateways.accounts import SocialAccount
from aicmo.ops.users import WebApiToken, WebUser
from aicmo.orchestration.models import (
    AOLAction,
    AOLControl,
    AOLExecutionLog,
    AOLSlot,
    AOLSlotWaiter,
)

metadata = Base.metadata

__all__ = [
    "AOLAction",
    "AOLControl",
    "AOLExecutionLog",
    "AOLSlot",
    "AOLSlotWaiter",
    "Campaign",
    "CampaignMetrics",
    "Contact",
    "EmailEvent",
    "Lead",
    "OrchestratorRun",
    "OutreachMessage",
    "Recipient",
    "SendingBrake",
    "SocialAccount",
    "Suppression",
    "WebApiToken",
    "WebUser",
    "metadata",
]
