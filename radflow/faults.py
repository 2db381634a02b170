"""Crash points: where a fault test kills a process on purpose, to prove that what was committed
before the point is enough to finish the work after a restart (STYLE.md: "test it by killing
the process between every two steps").

A crash point is a no-op unless the environment variable ``RADFLOW_CRASH_AT`` names it (a comma
list is allowed); then the process SIGKILLs itself there: no ``finally``, no ``atexit``, no
flush, exactly like a power cut or the OOM killer.

Example:
    ```python
    from radflow.faults import crash_point

    commit_decision()
    crash_point("agent.after_decide")     # RADFLOW_CRASH_AT=agent.after_decide kills us here
    post_to_hub()
    ```

The points (each named where it is):

* ``agent.after_decide``: the agent committed a job's outcome (job row, audit event, outbox
  entry) and has not sent it;
* ``outbox.before_send`` / ``outbox.after_send``: an outbox entry is about to be sent / the
  receiver acknowledged it and the acknowledgement is not recorded yet;
* ``steward.after_decide``: a steward's release decision is committed, nothing sent;
* ``review.after_decide``: a review decision is committed, the case run not yet resumed.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "RADFLOW_CRASH_AT"
logger = logging.getLogger(__name__)


def crash_point(name: str) -> None:
    """SIGKILL this process if ``RADFLOW_CRASH_AT`` names ``name``; otherwise nothing."""
    wanted = os.environ.get(ENV)
    if not wanted or name not in {w.strip() for w in wanted.split(",")}:
        return
    logger.warning("crash point %s: this process kills itself (%s)", name, ENV)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
