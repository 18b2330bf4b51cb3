"""Errors of the campaign layer.

Those a handler raises are :class:`PermanentError` (FAILED, never retried) or
:class:`TransientError` (retried through the AOL), so the engine classifies them.
"""

from __future__ import annotations

from aicmo.orchestration.errors import Deferred, PermanentError, TransientError


class CampaignError(Exception):
    """Base of the campaign layer's errors for API callers (CLI, web)."""


class CampaignNotFound(CampaignError, PermanentError, LookupError):
    def __init__(self, campaign_id: int) -> None:
        self.campaign_id = campaign_id
        super().__init__(f"campaign {campaign_id} does not exist")


class MessageNotFound(CampaignError, PermanentError, LookupError):
    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        super().__init__(f"message {message_id} does not exist")


class LeadNotFound(CampaignError, PermanentError, LookupError):
    def __init__(self, lead_id: int) -> None:
        self.lead_id = lead_id
        super().__init__(f"lead {lead_id} does not exist")


class InvalidCampaign(CampaignError, ValueError):
    """A campaign definition or change is refused; nothing was written."""


class ReviewError(CampaignError):
    """The message is not in a state that allows this review decision."""


class ReviewGateClosed(CampaignError, PermanentError):
    """CAMPAIGN_PUBLISH found a message that is not approved: nothing is sent."""


class CampaignHalted(CampaignError, PermanentError):
    """The campaign is not ACTIVE or its kill switch is on: nothing is sent.

    ``campaigns.resume`` replays the publishes this stopped.
    """


class DailyLimitReached(CampaignError, Deferred):
    """The campaign published its daily limit; the publish waits for the next local day.

    A deferral (as a closed send window is): the attempt is given back, so a publish can
    wait any number of days and never reach the DLQ by waiting."""


class TickLeaseLost(CampaignError, TransientError):
    """The tick's campaign lease expired and was taken over: its work is rolled back."""
