"""Retry policies for radflow's tasks."""

from __future__ import annotations

from typing import Any

from radflow.errors import DicomInputError, PolicyViolation


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry Orthanc and other transient failures; never retry bad input (the same series would
    fail the same way) or a policy refusal."""
    try:
        state.result(raise_on_failure=True)
    except (DicomInputError, PolicyViolation):
        return False
    except Exception:
        return True
    return False
