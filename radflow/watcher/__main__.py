"""``python -m radflow.watcher --site NAME``: the watcher process that `radflow site up` starts."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from radflow.service import run_site_service
    from radflow.watcher.core import watcher_for

    return run_site_service("python -m radflow.watcher",
                            lambda ctx: watcher_for(ctx, heartbeat=True), argv)

if __name__ == "__main__":
    sys.exit(main())
