"""Send windows and cap specs: the local-time arithmetic, DST days, and validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from aicmo.cam import admission
from aicmo.cam.campaigns import parse_spec
from aicmo.cam.errors import InvalidCampaign
from aicmo.config import Settings

WEEKDAYS = {"start": "09:00", "end": "17:30", "days": ["mon", "tue", "wed", "thu", "fri"]}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_inside_the_window_is_open() -> None:
    # Tuesday 2026-12-01 10:00 in Paris is 09:00 UTC.
    assert admission.next_opening(WEEKDAYS, "Europe/Paris", utc(2026, 12, 1, 9, 0)) is None


def test_before_the_opening_waits_for_it_the_same_day() -> None:
    opening = admission.next_opening(WEEKDAYS, "Europe/Paris", utc(2026, 12, 1, 6, 0))
    assert opening == utc(2026, 12, 1, 8, 0)  # 09:00 CET


def test_the_end_is_exclusive_and_friday_evening_waits_for_monday() -> None:
    friday_close = utc(2026, 12, 4, 16, 30)  # 17:30 CET
    assert admission.next_opening(WEEKDAYS, "Europe/Paris", friday_close) == utc(2026, 12, 7, 8)


def test_the_window_is_read_in_the_given_timezone() -> None:
    now = utc(2026, 12, 1, 9, 0)  # 18:00 in Tokyo: closed there, open in Paris
    assert admission.next_opening(WEEKDAYS, "Asia/Tokyo", now) == utc(2026, 12, 2, 0, 0)


def test_spring_forward_an_opening_in_the_gap_is_read_as_the_beat_reads_it() -> None:
    # 2026-03-29, Paris: 02:00 -> 03:00. 02:30 is read with the offset before (+01:00),
    # i.e. 01:30 UTC = 03:30 local, as a daily beat slot at 02:30 is.
    window = {"start": "02:30", "end": "05:00", "days": ["sun"]}
    assert admission.next_opening(window, "Europe/Paris", utc(2026, 3, 29, 0, 0)) == utc(
        2026, 3, 29, 1, 30
    )


def test_fall_back_a_repeated_opening_is_its_first_occurrence() -> None:
    # 2026-10-25, Paris: 03:00 -> 02:00. 02:30 happens twice: the first is 00:30 UTC.
    window = {"start": "02:30", "end": "05:00", "days": ["sun"]}
    assert admission.next_opening(window, "Europe/Paris", utc(2026, 10, 24, 22)) == utc(
        2026, 10, 25, 0, 30
    )
    # The window closes at 05:00 CET (04:00 UTC): a 3.5-hour window that day, not 2.5.
    assert admission.next_opening(window, "Europe/Paris", utc(2026, 10, 25, 3, 59)) is None


def test_deferral_says_until_when_in_local_time() -> None:
    now = utc(2026, 12, 1, 6, 0)
    error = admission.SendWindowClosed(utc(2026, 12, 1, 8), "Europe/Paris", now)
    assert str(error).startswith("waiting for send window until 2026-12-01T09:00:00+01:00")
    assert error.retry_after == 7200


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ({"start": "18:00", "end": "09:00"}, "must be after its start"),
        ({"start": "9:00", "end": "17:00"}, "start"),
        ({"start": "09:00", "end": "17:00", "days": ["funday"]}, "unknown weekday"),
        ({"start": "09:00", "end": "17:00", "days": []}, "days"),
    ],
)
def test_bad_windows_are_refused_with_what_is_wrong(
    window: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidCampaign, match=problem):
        parse_spec({"name": "x", "steps": [{"subject": "s", "body": "b"}], "send_window": window})


def test_caps_parse_and_bad_caps_are_refused() -> None:
    assert admission.parse_caps("1/24h, 3/7d") == [
        admission.Cap(1, timedelta(hours=24)),
        admission.Cap(3, timedelta(days=7)),
    ]
    for bad in ("0/24h", "1/0h", "1/24", "one/24h"):
        with pytest.raises(ValueError, match="frequency cap"):
            admission.parse_caps(bad)
        with pytest.raises(ValidationError, match="frequency cap"):
            Settings(cam_frequency_caps=bad)


def test_campaign_caps_only_add_to_the_global_ones() -> None:
    spec = parse_spec(
        {
            "name": "x",
            "steps": [{"subject": "s", "body": "b"}],
            "frequency_caps": [{"max": 1, "hours": 72}],
        }
    )
    assert [cap.model_dump() for cap in spec.frequency_caps] == [{"max": 1, "hours": 72.0}]
    with pytest.raises(InvalidCampaign, match="max"):
        parse_spec(
            {
                "name": "x",
                "steps": [{"subject": "s", "body": "b"}],
                "frequency_caps": [{"max": 0, "hours": 1}],
            }
        )
