"""A site's processes, tracked by PID files: a process is known by its PID and its start in
clock ticks since boot, so a step of the wall clock (NTP, a virtual machine resumed) loses
none of them, and a PID taken by another process is never signalled."""

from __future__ import annotations

import json
import sys

from radflow.site.process import ManagedProcess, start_ticks


def test_a_wall_clock_step_loses_no_process(tmp_path) -> None:
    proc = ManagedProcess("sleeper", tmp_path, tmp_path / "sleeper.log")
    pid = proc.start([sys.executable, "-c", "import time; time.sleep(60)"], {})
    try:
        info = json.loads(proc.pidfile.read_text())
        assert info["start_ticks"] == start_ticks(pid)
        # the boot time moved by 100 s since the file was written: the wall-clock start time
        # psutil reports now differs, the start in ticks does not
        proc.pidfile.write_text(json.dumps(info | {"create_time": info["create_time"] - 100}))
        assert proc.process() is not None and proc.process().pid == pid
        # another process under this PID (another start): not ours, and never signalled
        proc.pidfile.write_text(json.dumps(info | {"start_ticks": info["start_ticks"] - 1}))
        assert proc.process() is None and proc.died()
        proc.pidfile.write_text(json.dumps(info))
        assert proc.stop(timeout=10)
        assert start_ticks(pid) is None or proc.process() is None
    finally:
        proc.stop(timeout=10)
