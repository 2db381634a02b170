"""``python -m radflow.hub --home RADFLOW_HOME``: serve the federation API (loopback unless
``--bind`` with ``--certfile``/``--keyfile``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radflow.hub")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args(argv)
    import uvicorn

    from radflow.hub.api import create_app
    from radflow.hub.home import HubHome

    home = HubHome.of(args.home)
    app = create_app(home.engine(), home.key, home.url(), home=home)
    uvicorn.run(app, host=args.bind, port=home.config()["port"], access_log=False,
                ssl_certfile=args.certfile, ssl_keyfile=args.keyfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
