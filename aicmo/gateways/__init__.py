"""Ports to the outside world (email, social, metrics, leads) and their implementations.

Every implementation receives the action's idempotency key and hands it to the provider, so a
retried action is recognisable on the other side. Proof implementations write artifacts.
"""
