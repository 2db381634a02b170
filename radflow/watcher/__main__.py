"""``python -m radflow.watcher --site NAME``: the watcher process that `radflow site up` starts."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from radflow.errors import RadflowError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radflow.watcher")
    parser.add_argument("--site", required=True, help="site name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call is noise
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    from radflow.site import SiteManager
    from radflow.watcher.core import watcher_for

    try:
        ctx = SiteManager().context(args.site)
        watcher_for(ctx, heartbeat=True).run_forever()
    except KeyboardInterrupt:
        return 0
    except RadflowError as exc:
        logging.getLogger("radflow.watcher").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
