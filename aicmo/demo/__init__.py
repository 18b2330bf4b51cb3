"""The embedded demo (``aicmo demo`` / ``make demo``): the whole flow with no servers.

``actions`` declares the demo's one extra action type (imported by the demo's worker through
``AICMO_ACTION_MODULES``); ``runner`` drives the demo; ``campaign`` plugs in the campaign
flow from ``aicmo.cam``.
"""
