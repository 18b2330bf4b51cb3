"""Benchmarks of aicmo against plain Celery (``make bench``), not collected by pytest.

Run ``python -m tests.benchmarks --help``. Nothing here is named ``test_*``: timed figures are
never pass/fail tests; ``tests/integration/test_bench_smoke.py`` only keeps the harness alive.
"""
