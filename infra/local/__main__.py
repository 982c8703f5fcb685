"""python -m infra.local: run the local stack until interrupted.

Once ready it prints one JSON line with every endpoint the SDK needs, e.g.
{"region": "us-east-1", "kinesisvideo": "http://127.0.0.1:4567", "s3": "http://127.0.0.1:5000", ...}
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from .limits import Limits
from .stack import LocalStack

EXAMPLES = """examples:
  python -m infra.local                       # ephemeral ports, fragments in memory
  python -m infra.local --kvs-port 4567 --moto-port 5000 --data-dir /tmp/kvs

then point any AWS SDK at the printed endpoints with any credentials, e.g.
  aws kinesisvideo list-streams --endpoint-url http://127.0.0.1:4567 --region us-east-1
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a local Kinesis Video Streams service (PutMedia, GetMedia, "
                    "ListFragments...) and moto's server for S3, Kinesis Data Streams and "
                    "DynamoDB, on loopback, with no AWS account.", epilog=EXAMPLES)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--kvs-port", type=int, default=0, help="Kinesis Video port (0: any free)")
    parser.add_argument("--moto-port", type=int, default=0, help="moto's port (0: any free)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--data-dir", help="keep fragments in this folder instead of memory")
    parser.add_argument("--retention", type=float, default=300.0, metavar="SECONDS",
                        help="how long fragments are kept (default 300; with --data-dir a "
                             "stream's DataRetentionInHours may keep them longer)")
    parser.add_argument("--getmedia-idle", type=float, default=Limits.getmedia_idle_seconds,
                        metavar="SECONDS",
                        help="end a caught-up GetMedia response after this long without a new "
                             "fragment (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if args.getmedia_idle <= 0:
        parser.error(f"--getmedia-idle must be a positive number of seconds, "
                     f"got {args.getmedia_idle}")
    if args.retention <= 0:
        parser.error(f"--retention must be a positive number of seconds, got {args.retention}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stack = LocalStack(args.host, args.kvs_port, args.moto_port, args.region, args.data_dir,
                       args.retention, Limits(getmedia_idle_seconds=args.getmedia_idle))
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    with stack:
        print(json.dumps(stack.endpoints), flush=True)
        stopping.wait()
    print("local stack stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
