"""``python -m radflow.web --site NAME``: serve the site's web app on its port (loopback).

With ``--bind HOST --certfile F --keyfile F`` it serves HTTPS elsewhere (session cookies are
then ``Secure``)."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radflow.web")
    parser.add_argument("--site", required=True, help="site name")
    parser.add_argument("--bind", default="127.0.0.1", help="address (default: loopback only)")
    parser.add_argument("--certfile", help="TLS certificate (PEM)")
    parser.add_argument("--keyfile", help="TLS private key (PEM)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from radflow.errors import RadflowError
    from radflow.site import SiteManager
    from radflow.web.app import create_app

    try:
        ctx = SiteManager().context(args.site)
        tls = bool(args.certfile and args.keyfile)
        app = create_app(ctx, tls=tls)
    except RadflowError as exc:
        logging.getLogger("radflow.web").error("%s (fix: %s)", exc.message, exc.fix)
        return 1
    uvicorn.run(app, host=args.bind, port=ctx.config.ports.worklist, log_level="info",
                ssl_certfile=args.certfile, ssl_keyfile=args.keyfile,
                # no access log: the log-in callback's query holds the authorization code
                access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
