"""The demo stops on SIGINT/SIGTERM even when the first KeyboardInterrupt is swallowed.

CI once saw Ctrl-C land while pydantic-core was compiling a regex: Python printed
"Exception ignored in ..." and the demo ran to the end with exit code 0.
"""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import pytest
from rich.console import Console

from aicmo.demo.runner import Demo, DemoPaths, Interrupted, _interruptible


def _demo(tmp_path: Path) -> Demo:
    return Demo(paths=DemoPaths(tmp_path), console=Console(file=io.StringIO()), timeout=5)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_swallowed_interrupt_stops_the_demo_at_its_next_line(tmp_path: Path, sig: int) -> None:
    demo = _demo(tmp_path)
    with _interruptible():
        try:
            os.kill(os.getpid(), sig)
            time.sleep(1)  # the handler raises within this sleep
        except KeyboardInterrupt:
            pass  # what C code that ignores the exception amounts to
        with pytest.raises(Interrupted):
            demo.say("the next line the demo would print")


def test_a_swallowed_interrupt_ends_a_wait(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    polls = 0

    def never_done() -> bool:
        nonlocal polls
        polls += 1
        if polls == 1:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except KeyboardInterrupt:
                pass
        return False

    demo.show_counts = lambda: None  # type: ignore[method-assign]  # no database here
    with _interruptible(), pytest.raises(Interrupted):
        demo.wait_for(never_done, "something that never happens")
    assert polls == 1


def test_the_flag_does_not_outlive_the_demo(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    with pytest.raises(Interrupted), _interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    demo.say("a later demo in the same process is not interrupted by the old signal")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
