"""The embedded figure's producer: ``python -m tests.benchmarks.embedded_producer N``.

It runs in its own process because aicmo's settings are per process: this one has the
embedded environment (SQLite file, filesystem transport). It enqueues N no-op actions one by
one, each in its own transaction, and prints the epoch times of the first enqueue and of the
end of the last one as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time


def main(count: int) -> None:
    import tasks  # noqa: F401 - installs the dispatcher for the filesystem transport
    from aicmo.db import session_scope
    from aicmo.orchestration.queue import ActionQueue

    # Warm the engine and the transport outside the timed loop, as the PostgreSQL run does
    # (its harness process has long been connected when it starts).
    with session_scope() as session:
        session.connection()
    t_first = time.time()
    for n in range(count):
        with session_scope() as session:
            ActionQueue.enqueue_action(session, "T_NOOP", {"n": n})
    print(json.dumps({"t_first": t_first, "t_enqueued": time.time()}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
