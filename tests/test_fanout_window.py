"""The fan-out's sliding window (pure logic, with plain objects): a case that is run again
keeps its slot while the other slots go on, and rows come back in the order of the series."""

from __future__ import annotations

import tasks.fanout as fanout
from radflow.types import SeriesRef


def refs(n: int) -> list[SeriesRef]:
    return [SeriesRef(orthanc_id=f"s{i}", series_uid=f"1.{i}", study_uid="1") for i in range(n)]


class Clock:
    """Handles that finish after a number of polls; records what was submitted when."""

    def __init__(self) -> None:
        self.now = 0
        self.log: list[tuple[int, str]] = []

    def submit(self, ref: SeriesRef, polls: int) -> dict:
        self.log.append((self.now, ref.orthanc_id))
        return {"ref": ref, "due": self.now + polls, "attempt": sum(
            1 for _, r in self.log if r == ref.orthanc_id)}

    def done(self, handle: dict) -> bool:
        return self.now >= handle["due"]


def test_a_case_run_again_keeps_its_slot_and_the_others_go_on(monkeypatch) -> None:
    clock = Clock()

    def tick(_seconds: float) -> None:
        clock.now += 1

    monkeypatch.setattr(fanout.time, "sleep", tick)
    durations = {"s0": 2, "s1": 8, "s2": 2, "s3": 2, "s4": 2}

    def submit(ref: SeriesRef) -> dict:
        return clock.submit(ref, durations[ref.orthanc_id])

    def collect(handle: dict, ref: SeriesRef):
        if ref.orthanc_id == "s0" and handle["attempt"] == 1:  # crashed once: run again
            return fanout.Again(submit(ref))
        return {"series": ref.orthanc_id, "attempt": handle["attempt"]}

    rows = fanout._window(refs(5), 2, submit, clock.done, collect)
    assert [r["series"] for r in rows] == ["s0", "s1", "s2", "s3", "s4"]
    assert rows[0]["attempt"] == 2 and all(r["attempt"] == 1 for r in rows[1:])
    submitted = [r for _, r in clock.log]
    assert submitted == ["s0", "s1", "s0", "s2", "s3", "s4"]
    started = {r: t for t, r in reversed(clock.log)}  # first submission of each
    # s0's second attempt took its own slot: s2 started when it finished, while s1 still ran
    assert started["s2"] < durations["s1"]
    assert max(t for t, _ in clock.log) < 2 + 2 + 2 + 2 + 2  # never one case at a time


def test_one_at_a_time_keeps_the_order() -> None:
    order: list[str] = []

    def submit(ref: SeriesRef) -> str:
        order.append(ref.orthanc_id)
        return ref.orthanc_id

    rows = fanout._window(refs(3), 1, submit, lambda h: True, lambda h, ref: {"series": h})
    assert order == ["s0", "s1", "s2"] and [r["series"] for r in rows] == order
