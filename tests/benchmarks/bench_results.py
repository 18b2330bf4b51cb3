"""What a benchmark run measured, and the sizes it measured it at (no aicmo import here:
the report and its unit tests use this module without a database or a broker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The other frameworks' columns: kind -> (package, job). Their workers: see start_reference().
REFERENCES = {
    "dramatiq": ("dramatiq", "noop"),
    "dramatiq-pg": ("dramatiq", "pg_write"),
    "procrastinate": ("procrastinate", "noop"),
    "procrastinate-pg": ("procrastinate", "pg_write"),
}
# The order of a repetition: aicmo between its two headline baselines, then the context runs.
HEADLINE_ORDER = ("plain", "aicmo", "plain-noevents")


def run_order(kinds: list[str], rep: int) -> list[str]:
    """The kinds of repetition ``rep`` in the order they run: the headline trio first (aicmo
    in the middle, so it runs right after or before each of its baselines), the rest after;
    every other repetition reversed, so no side always runs first or last."""
    ordered = [k for k in HEADLINE_ORDER if k in kinds] + [
        k for k in kinds if k not in HEADLINE_ORDER
    ]
    return ordered if rep % 2 == 0 else ordered[::-1]


@dataclass(frozen=True)
class Sizes:
    e2e: int = 5000
    bulk: int = 10_000  # the bulk e2e row: one enqueue_many, batched messages
    drain: int = 5000
    enqueue_one: int = 2000
    enqueue_bulk: int = 10_000
    latency_rate: float = 200.0
    latency_seconds: float = 10.0
    sweep_small: int = 100_000
    sweep_large: int = 1_000_000
    sweep_due: int = 1000
    campaigns: int = 10_000
    embedded: int = 5000


FULL = Sizes()
QUICK = Sizes(
    e2e=500,
    bulk=2000,
    drain=500,
    enqueue_one=200,
    enqueue_bulk=1000,
    latency_seconds=1.0,
    sweep_small=10_000,
    sweep_large=100_000,
    sweep_due=100,
    campaigns=1000,
    embedded=200,
)


@dataclass
class Results:
    """metric values per figure and side, one per repetition, plus notes."""

    values: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    not_measured: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    load: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    load_before: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    # bench_explain's profiles (worker CPU by package, import costs...), by part.
    profiles: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: str, kind: str, metrics: dict[str, float]) -> None:
        side = self.values.setdefault(figure, {}).setdefault(kind, {})
        for name, value in metrics.items():
            side.setdefault(name, []).append(float(value))

    def get(self, figure: str, kind: str, metric: str) -> list[float]:
        return self.values.get(figure, {}).get(kind, {}).get(metric, [])

    def note(self, figure: str, message: str) -> None:
        self.notes.setdefault(figure, []).append(message)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Results:
        """The results a run wrote with ``--json`` (for ``--merge``)."""
        results = cls()
        for name in ("values", "not_measured", "notes", "seconds", "versions", "profiles"):
            setattr(results, name, payload.get(name, {}))
        for name in ("load", "load_before"):
            setattr(results, name, {k: tuple(v) for k, v in payload.get(name, {}).items()})
        return results

    def drop(self, figure: str) -> None:
        """Forget a figure (it is about to be measured again)."""
        for table in (self.values, self.not_measured, self.notes, self.load, self.load_before):
            for key in [k for k in table if k == figure or k.startswith(f"{figure}_")]:
                del table[key]
        if figure == "profiles":
            self.profiles = {}

    def as_json(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "not_measured": self.not_measured,
            "notes": self.notes,
            "load": self.load,
            "load_before": self.load_before,
            "seconds": self.seconds,
            "versions": self.versions,
            "profiles": self.profiles,
        }


def served_rate(stamps: list[tuple[float, float]]) -> float:
    """The rate the handlers started at, first start to last: below the rate sent, the worker
    did not keep up and the latency figure measures a growing backlog."""
    starts = sorted(started for _t0, started in stamps)
    if len(starts) < 2 or starts[-1] <= starts[0]:
        return float("nan")
    return (len(starts) - 1) / (starts[-1] - starts[0])
