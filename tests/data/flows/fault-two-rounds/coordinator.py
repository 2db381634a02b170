"""The coordinator part of fault-two-rounds: a first round, then a second one at the sites that
released in the first; the result is each round's pooled count. The second round's parameters
carry a pad as large as a small model's weights: they reach the site's flow run by file."""

from __future__ import annotations

from typing import Any


def first_round(params: dict[str, Any]) -> dict[str, Any]:
    return {"round": "first"}


def next_round(params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    if rounds[-1]["round"] != "first":
        return None
    return {"round": "second", "pad": [0.123456789] * 40_000}  # ~0.5 MB of parameters


def combine(params: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for done in rounds:
        released = [s for s in done["sites"] if s["status"] == "released"]
        out[f"matching_{done['round']}"] = sum(s["release"]["matching"] or 0 for s in released)
        out[f"sites_{done['round']}"] = sorted(s["site"] for s in released)
    return out
