"""The retry policy of radflow's tasks: retry what may go away, never what will not."""

from __future__ import annotations

from typing import Any

from radflow.errors import is_transient


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """A Prefect ``retry_condition_fn``: retry only transient failures (Orthanc or Prefect
    unreachable, 5xx answers, connection errors; see :func:`radflow.errors.is_transient`).
    Bad input, configuration, a missing plugin or model, policy refusals and empty results fail
    at once: the same call would fail the same way."""
    try:
        state.result(raise_on_failure=True)
    except Exception as exc:  # noqa: BLE001 (classified, not swallowed)
        return is_transient(exc)
    return False
