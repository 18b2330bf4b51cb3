"""Campaigns on the AOL: leads, drafting, the review gate, publishing and metrics.

Modules, one per concept:

- ``campaigns``: create a campaign, change its status, kill switch.
- ``leads``: capture (validate, normalise, deduplicate) and enqueue captures.
- ``suppressions``: addresses and domains never contacted.
- ``orchestrator``: ``tick(session, campaign_id, now)``, the heart of it.
- ``drafting`` / ``templates``: a step's text for a lead (LLM or template).
- ``review``: approve / reject / list messages.
- ``publishing``: daily limit, queueing CAMPAIGN_PUBLISH, the review gate, admission.
- ``reconcile``: stranded messages and orphan tick leases: the census and its repairs.
- ``metrics``: daily counts per local date.
- ``schedule``: what beat calls (ticks due, daily metrics).
- ``webhooks``: signed lead webhooks.
- ``auto``: ``multichannel_batch`` (the seed's entry point).
- ``keys`` / ``clock`` / ``errors`` / ``enqueue``: key formats, local days, errors, bulk enqueue.

``aicmo.cam`` enqueues only through ``aicmo.orchestration.queue``; the action handlers live in
``aicmo.orchestration.adapters.campaign_adapter`` and ``leads_adapter``.
"""
