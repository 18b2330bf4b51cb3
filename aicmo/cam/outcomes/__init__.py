"""The outcome loop of campaign email: unsubscribe, provider events, click tracking, brakes.

One module per concept: ``tokens`` (signed capability tokens), ``mail`` (what every outreach
email carries: List-Unsubscribe, the footer, tracked links), ``unsubscribe``, ``events`` (a
provider's bounce/complaint/delivery/open/click applied to the message it names), ``brakes``
(automatic pauses), ``counts`` (per message and campaign day). Models in ``models``.
"""
