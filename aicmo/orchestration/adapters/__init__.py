"""Action types, one module per family. Importing this package registers all of them
(it is the default of ``AICMO_ACTION_MODULES``)."""

from aicmo.orchestration.adapters import (
    campaign_adapter,
    email_adapter,
    leads_adapter,
    outcomes_adapter,
    social_adapter,
)

__all__ = [
    "campaign_adapter",
    "email_adapter",
    "leads_adapter",
    "outcomes_adapter",
    "social_adapter",
]
