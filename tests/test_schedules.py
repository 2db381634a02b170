"""A scheduled study's schedule, as the hub checks it before Prefect gets it: a cron of five
fields (in a time zone) or an interval of a minute to a year, never both, never neither; the
command line's --every. (The schedule on the hub's Prefect, its run completing, pausing and
deleting from the web app: tests/test_federation_sites.py.)"""

from __future__ import annotations

import pytest

from radflow.cli.study_schedule import _every, _seconds
from radflow.errors import ConfigurationError
from radflow.hub.schedules import _schedule, _who


def test_a_schedule_is_a_cron_or_an_interval() -> None:
    assert _schedule("0 2 * * 1", None, "Europe/Berlin") == {"cron": "0 2 * * 1",
                                                             "timezone": "Europe/Berlin"}
    assert _schedule(None, 3600, "UTC") == {"interval": 3600, "timezone": "UTC"}
    for cron, every, tz, said in (("61 * * * *", None, "UTC", "is not a schedule"),
                                  ("every monday", None, "UTC", "is not a schedule"),
                                  ("0 2 * * 1", None, "Mars/Olympus", "is not a schedule"),
                                  (None, 30, "UTC", "between 1 minute"),
                                  ("0 2 * * 1", 3600, "UTC", "only one"),
                                  (None, None, "UTC", "only one")):
        with pytest.raises(ConfigurationError, match=said):
            _schedule(cron, every, tz)


def test_every_and_who_made_it() -> None:
    assert [_seconds(t) for t in ("30m", "12h", "7d")] == [1800, 43200, 604800]
    for bad in ("30", "soon", "m"):
        with pytest.raises(ConfigurationError, match="not a duration"):
            _seconds(bad)
    assert [_every(s) for s in (1800, 43200, 604800, 90)] == [
        "every 30m", "every 12h", "every 7d", "every 90s"]
    assert _who("schedule:radflow-1a2b3c4d (cli:anna)") == "cli:anna"
    assert _who("schedule:radflow-1a2b3c4d (token:a (b))") == "token:a (b)"
