"""The demo's campaign flow, through ``aicmo.cam`` only (the demo holds no campaign logic).

A campaign with five leads (one of them do-not-contact) is activated; each round enqueues a
real CAMPAIGN_TICK, which the worker runs (drafting the next step for every due lead); a
reviewer approves the drafts, but rejects one, and every approval's CAMPAIGN_PUBLISH is
published by the worker in proof mode (an .eml artifact per email).

``load()`` returns the flow when ``aicmo.cam`` offers what it needs, or the reason it cannot
run (the demo then says why and runs without it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aicmo.demo.runner import Demo

# What the flow calls, module by module.
REQUIRED: dict[str, tuple[str, ...]] = {
    "aicmo.cam.campaigns": ("create_campaign", "activate"),
    "aicmo.cam.leads": ("capture",),
    "aicmo.cam.review": ("approve", "reject", "list_messages"),
    "aicmo.cam.schedule": ("enqueue_ticks",),
    "aicmo.orchestration.adapters.campaign_adapter": ("campaign_tick", "campaign_publish"),
}

REVIEWER = "demo reviewer"
CAMPAIGN: dict[str, Any] = {
    "name": "aicmo demo",
    "timezone": "Europe/Paris",
    "tick_every_minutes": 15,
    "channels": ["email"],
    "requires_approval": True,
    "daily_send_limit": 100,
    "steps": [
        {
            "subject": "{first_name|Hello}, a question about {company|your team}",
            "body": "Hi {first_name|there},\n\nwould {company|your team} try aicmo?\n",
            "wait_minutes": 0,
        },
        {
            "subject": "Following up",
            "body": "Hi {first_name|there}, just following up on my note.\n",
            "wait_minutes": 0,
        },
    ],
}
LEADS: list[dict[str, Any]] = [
    {"email": "ada@example.com", "first_name": "Ada", "company": "Analytical Engines"},
    {"email": "grace@example.com", "first_name": "Grace", "company": "COBOL Inc"},
    {"email": "alan@example.com", "first_name": "Alan", "company": "Bletchley"},
    {"email": "edsger@example.com", "first_name": "Edsger", "company": "Structured"},
    {"email": "nobody@example.com", "first_name": "Nobody", "consent": "DNC"},
]
ROUNDS = 2


class CampaignFlow(Protocol):
    title: str

    def run(self, demo: Demo) -> dict[str, Any]:
        """Create the demo campaign, tick it, approve its drafts, publish; return numbers."""


def missing_api() -> list[str]:
    missing = []
    for module_name, names in REQUIRED.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing.append(f"{module_name} ({exc})")
            continue
        missing.extend(f"{module_name}.{name}" for name in names if not hasattr(module, name))
    return missing


class CamFlow:
    title = "campaign: leads, ticks, review, publishing in proof mode"

    def run(self, demo: Demo) -> dict[str, Any]:
        from aicmo.cam import campaigns, leads, review
        from aicmo.cam.schedule import enqueue_ticks
        from aicmo.db import session_scope, utcnow
        from aicmo.demo.runner import all_in

        with session_scope() as session:
            campaign = campaigns.create_campaign(session, CAMPAIGN)
            captured = leads.capture(session, campaign.id, "demo", LEADS)
            campaigns.activate(session, campaign.id)
            campaign_id = campaign.id
        demo.say(
            f"  campaign {campaign_id} ACTIVE with {len(captured.created)} leads "
            "(one is do-not-contact: no tick may draft for it)"
        )
        published = rejected = 0
        ticks: list[int] = []
        for round_number in range(1, ROUNDS + 1):
            with session_scope() as session:
                tick_id = enqueue_ticks(session, [campaign_id], utcnow())[0].action_id
            ticks.append(tick_id)
            demo.wait_for(all_in([tick_id], {"SUCCESS"}), f"tick action {tick_id}")
            with session_scope() as session:
                drafts = review.list_messages(session, campaign_id, "DRAFT")
            demo.say(
                f"  tick {round_number} (action {tick_id}): {len(drafts)} draft(s) waiting "
                "for review; nothing is sent before a person approves"
            )
            publishes: list[int] = []
            with session_scope() as session:
                for index, draft in enumerate(drafts):
                    if round_number == 1 and index == len(drafts) - 1:
                        review.reject(session, draft.id, REVIEWER, "not this one")
                        rejected += 1
                        demo.say(
                            f"  rejected message {draft.id} to {draft.lead}: "
                            "never sent, the lead now waits for a person"
                        )
                        continue
                    result = review.approve(session, draft.id, REVIEWER)
                    if result.publish_action_id is not None:
                        publishes.append(result.publish_action_id)
            demo.say(f"  approved {len(publishes)} message(s): CAMPAIGN_PUBLISH queued for each")
            demo.wait_for(all_in(publishes, {"SUCCESS"}), "the approved messages to publish")
            published += len(publishes)
            demo.say(f"  published {len(publishes)} email(s) in proof mode (.eml artifacts)")
        return {
            "campaign_id": campaign_id,
            "leads": len(captured.created),
            "ticks": len(ticks),
            "published": published,
            "rejected": rejected,
        }


def load() -> CampaignFlow | str:
    missing = missing_api()
    if missing:
        return "aicmo.cam does not provide " + ", ".join(missing)
    return CamFlow()
