"""python -m infra.local: run the local stack until interrupted.

Once ready (resources created and the consumer config written, when asked) it prints one JSON
line with every endpoint the SDK needs, e.g.
{"region": "us-east-1", "kinesisvideo": "http://127.0.0.1:4567", "s3": "http://127.0.0.1:4568", ...}
A port that cannot be used is one line on stderr naming it and the option that changes it, and
exit status 1, at once. SIGTERM or Ctrl-C stops it, at any time (a second one exits at once).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .limits import Limits
from .ports import CannotListen
from .resources import BUCKET, DATA_STREAM
from .stack import LocalStack

EXAMPLES = f"""examples:
  python -m infra.local                       # any free ports, fragments in memory
  python -m infra.local --kvs-port 4567 --moto-port 4568 --data-dir /tmp/kvs
  # a stack ready for `python -m consumer run --config consumer.yaml`: data stream and
  # bucket ({DATA_STREAM}), camera stream cam-1, and the consumer's configuration
  python -m infra.local --kvs-port 4567 --moto-port 4568 --create-resources --stream cam-1 \\
      --write-config consumer.yaml --models-dir ../shared/models
  # and the lake: the data stream's records delivered to the bucket as Firehose does
  python -m infra.local --create-resources --firehose --firehose-buffer-seconds 10

then point any AWS SDK at the printed endpoints with any credentials, e.g.
  aws kinesisvideo list-streams --endpoint-url http://127.0.0.1:4567 --region us-east-1

exit status: 0 stopped by SIGTERM or Ctrl-C, 1 a port in use (or another failure to start),
2 bad arguments.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kvs-local-stack" if Path(sys.argv[0]).name == "kvs-local-stack"
        else "python -m infra.local", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a local Kinesis Video Streams service (PutMedia, GetMedia, "
                    "ListFragments...) and moto's server for S3, Kinesis Data Streams and "
                    "DynamoDB, on loopback, with no AWS account.", epilog=EXAMPLES)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--kvs-port", type=int, default=0, metavar="PORT",
                        help="Kinesis Video port (default 0: any free port)")
    parser.add_argument("--moto-port", type=int, default=0, metavar="PORT",
                        help="port of moto's server for S3, Kinesis Data Streams and DynamoDB "
                             "(default 0: any free port)")
    parser.add_argument("--region", default="us-east-1",
                        help="the region the services report (in stream ARNs, the JSON line "
                             "and the written config); clients must use the same one "
                             "(default %(default)s)")
    parser.add_argument("--data-dir", help="keep fragments in this folder instead of memory")
    parser.add_argument("--retention", type=float, default=300.0, metavar="SECONDS",
                        help="how long fragments are kept (default 300; with --data-dir a "
                             "stream's DataRetentionInHours may keep them longer)")
    parser.add_argument("--getmedia-idle", type=float, default=Limits.getmedia_idle_seconds,
                        metavar="SECONDS",
                        help="end a caught-up GetMedia response after this long without a new "
                             "fragment (default %(default)s)")
    ready = parser.add_argument_group("a stack ready for the consumer")
    ready.add_argument("--create-resources", action="store_true",
                       help="create the Kinesis data stream (--data-stream), the bucket "
                            "(--bucket) and the camera streams (--stream); the consumer "
                            "creates its lease table itself")
    ready.add_argument("--stream", action="append", default=[], metavar="NAME",
                       help="a camera stream: created with --create-resources, and read by the "
                            "written config (repeat for several; none: the config reads every "
                            "stream on the stack)")
    ready.add_argument("--data-stream", default=DATA_STREAM, metavar="NAME",
                       help="Kinesis data stream for the records (default %(default)s)")
    ready.add_argument("--bucket", default=BUCKET, metavar="NAME",
                       help="S3 bucket for frames, poses and clips (default %(default)s)")
    ready.add_argument("--write-config", metavar="FILE",
                       help="write a consumer configuration for this stack's endpoints, data "
                            "stream, bucket and streams to FILE (overwritten)")
    ready.add_argument("--models-dir", metavar="DIR",
                       help="with --write-config: the folder holding the pose model, written as "
                            "processing.pose.models_dir (default: the consumer's own)")
    ready.add_argument("--firehose", action="store_true",
                       help="with --create-resources: deliver the data stream's records to the "
                            "bucket as the stack's Firehose does in AWS, under records/type=/"
                            "stream=/date=/ as gzipped JSON lines (infra/local/firehose.py)")
    ready.add_argument("--firehose-buffer-seconds", type=float, default=60.0, metavar="SECONDS",
                       help="with --firehose: write a partition's records at least this often "
                            "(or at 64 MB; default %(default)s, as the stack's)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    for option in ("kvs_port", "moto_port"):
        if not 0 <= getattr(args, option) <= 65535:
            parser.error(f"--{option.replace('_', '-')} must be 0 to 65535, "
                         f"got {getattr(args, option)}")
    if args.getmedia_idle <= 0:
        parser.error(f"--getmedia-idle must be a positive number of seconds, "
                     f"got {args.getmedia_idle}")
    if args.retention <= 0:
        parser.error(f"--retention must be a positive number of seconds, got {args.retention}")
    if args.firehose and not args.create_resources:
        parser.error("--firehose needs --create-resources (its data stream and bucket)")
    if args.firehose_buffer_seconds <= 0:
        parser.error(f"--firehose-buffer-seconds must be a positive number of seconds, "
                     f"got {args.firehose_buffer_seconds}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stack = LocalStack(args.host, args.kvs_port, args.moto_port, args.region, args.data_dir,
                       args.retention, Limits(getmedia_idle_seconds=args.getmedia_idle))
    # Until the stack is up, SIGTERM and Ctrl-C keep their defaults (end the process, raise
    # KeyboardInterrupt): nothing waits on an event that nobody would look at.
    try:
        stack.start()
    except CannotListen as err:
        option = "--kvs-port" if err.server == "kvs" else "--moto-port"
        hint = ("check --host" if err.error.errno == errno.EADDRNOTAVAIL
                else f"choose another with {option} PORT, or {option} 0 for any free port")
        print(f"infra.local: {err}: {hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, OSError) as err:  # moto missing, a server that did not come up
        print(f"infra.local: cannot start: {err}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    bridge = None

    def stop(signum, _frame):
        if stopping.is_set():
            os._exit(128 + signum)  # second signal: leave now
        stopping.set()
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        failed = _prepare(stack, args)
        if failed:
            return failed
        if args.firehose:
            from .firehose import FirehoseBridge
            bridge = FirehoseBridge(stack.client("kinesis"), stack.client("s3"),
                                    args.data_stream, args.bucket,
                                    buffer_seconds=args.firehose_buffer_seconds).start()
        if not stopping.is_set():
            print(json.dumps(stack.endpoints), flush=True)
        stopping.wait()
    except KeyboardInterrupt:  # Ctrl-C before our handler was in place
        pass
    finally:
        if bridge is not None:
            bridge.stop()  # what it still holds goes to the bucket first
        stack.stop()
    print("local stack stopped", file=sys.stderr)
    return 0


def _prepare(stack: LocalStack, args: argparse.Namespace) -> int:
    """--create-resources and --write-config; a non-zero exit status when one failed."""
    from botocore.exceptions import BotoCoreError, ClientError

    from .resources import consumer_config, create_resources, write_consumer_config
    if args.create_resources:
        try:
            create_resources(stack, args.data_stream, args.bucket, args.stream)
        except (BotoCoreError, ClientError, RuntimeError) as err:
            print(f"infra.local: --create-resources: {err}", file=sys.stderr)
            return 1
    if args.write_config:
        from consumer.config import ConfigError
        config = consumer_config(stack.endpoints, args.data_stream, args.bucket, args.stream,
                                 args.models_dir)
        try:
            write_consumer_config(args.write_config, config)
        except ConfigError as err:
            print(f"infra.local: --write-config: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            print(f"infra.local: --write-config: cannot write {args.write_config}: "
                  f"{err.strerror or err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
