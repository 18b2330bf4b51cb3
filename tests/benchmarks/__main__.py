"""``python -m tests.benchmarks`` (``make bench``)."""

from tests.benchmarks.bench_main import main

raise SystemExit(main())
