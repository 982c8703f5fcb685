"""`python -m consumer demo`: the whole product on the embedded local stack, no AWS account.

Starts the local stack (our Kinesis Video service + moto's S3, Kinesis and DynamoDB), creates the
streams, bucket, data stream and checkpoint table, starts simulated cameras looping a clip with a
person in it, runs the consumer for a bounded time with a live status, then reads everything back
and prints a per-camera summary. Downstream, as in AWS: the local Firehose leg delivers the data
stream to the bucket's `records/` while the demo runs, and the lake (records and pose sequences)
is copied to `lake/` in the output folder for `kvs-analytics query`; given a database URL, the
event store is synced from the data stream too. Outputs are copied to a local folder to look at afterwards
(`--output`, default `demo-output/` in the current folder, which git ignores): what a previous run
left there is removed first, so the folder holds one run. The native libraries' own log lines
(MediaPipe, LiteRT, TFLite, absl: about a hundred at model load) go to `native.log` in that folder
instead of the terminal, unless `verbose`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from consumer.config import load_config
from consumer.observe.logs import native_logs_to
from consumer.sinks import replay

if TYPE_CHECKING:
    from infra.local.stack import LocalStack

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared" / "kvs-captures" / "vogels_330.mkv"
DEFAULT_MODELS = REPO.parent / "shared" / "models"
BUCKET = "kvs-analytics-demo"
DATA_STREAM = "kvs-analytics-demo-records"
STAGE_ZONE = [[0.55, 0.2], [0.9, 0.2], [0.9, 0.95], [0.55, 0.95]]  # normalised x, y
NATIVE_LOG = "native.log"
# what a run writes into its output folder; a later run removes these (and nothing else) first
OUTPUTS = ("records.jsonl", "cameras.log", NATIVE_LOG, "s3", "lake")
FIREHOSE_BUFFER_SECONDS = 5.0
CONSOLE_PORT = 8080  # the demo's lake fills while it runs, not only at the end
MARKER = ".kvs-analytics-demo"  # says the folder's s3/ is the demo's own, to be cleared


def prepare_output(output_dir: Path) -> str | None:
    """Create the output folder or remove what a previous run left in it (only the demo's own
    outputs, OUTPUTS). The reason it cannot be used, or None."""
    if output_dir.exists() and not output_dir.is_dir():
        return f"--output {output_dir} is not a folder"
    own = (output_dir / MARKER).exists() or (output_dir / "records.jsonl").exists()
    if (output_dir / "s3").exists() and not own:
        return (f"--output {output_dir} has an s3/ folder the demo did not write; "
                "choose another folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    (output_dir / MARKER).write_text("written by `python -m consumer demo`: its outputs here "
                                     "are removed at the start of each run\n")
    return None


def demo_config(endpoints: dict, cameras: list[str], models_dir: Path) -> dict:
    return {
        "aws": {"region": endpoints["region"],
                "endpoints": {k: v for k, v in endpoints.items() if k != "region"}},
        "streams": {"names": cameras, "start": "EARLIEST", "relist_seconds": 5,
                    "defaults": {"sampling": {"mode": "fps", "fps": 2}, "frames": "persons"}},
        "processing": {"pose": {"models_dir": str(models_dir)}},
        "outputs": {"kinesis": {"stream": DATA_STREAM, "linger_ms": 100},
                    "s3": {"bucket": BUCKET}},
        # the speaker on the right of the stage: entering it is an event, with a highlight
        # and a clip; leaving (or the camera cutting away) closes it; staying half a second
        # is a dwell, which lasts until then
        "events": {"cameras": {"demo-cam-*": {"rules": [
            {"type": "zone", "name": "stage", "polygon": STAGE_ZONE},
            {"type": "dwell", "name": "linger", "zone": "stage", "seconds": 0.5}]}},
            "pre_roll_seconds": 2, "post_roll_seconds": 2},
        "checkpoint": {"table": "kvs-analytics-demo-checkpoints", "worker_id": "demo"},
        "logging": {"level": "WARNING", "status_seconds": 5},
        "shutdown_seconds": 8,
    }


def run_demo(clip: Path, seconds: float, cameras: int, output_dir: Path,
             models_dir: Path, verbose: bool = False, database_url: str | None = None,
             then: Callable[[LocalStack], None] | None = None, console: bool = False,
             console_port: int = CONSOLE_PORT) -> int:
    """`verbose`: the native libraries' log lines on the terminal, not in native.log.
    `database_url`: the event store to sync from the data stream at the end. `then`: called
    with the local stack after the summary, while it still serves. `console`: then serve the
    events console on `console_port` until Ctrl-C, over `database_url` or, without one, a
    throwaway PostgreSQL server of this machine's (consumer.store.local_postgres)."""
    if not clip.is_file():
        print(f"demo: clip {clip} not found; pass --clip PATH (any video PyAV reads)",
              file=sys.stderr)
        return 2
    problem = prepare_output(output_dir)
    if problem is not None:
        print(f"demo: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"outputs go to {output_dir.resolve()}/ (a previous run's are removed first)"
          + ("" if verbose else f"; native MediaPipe/LiteRT log lines to {NATIVE_LOG} there"))
    with contextlib.ExitStack() as cleanup:
        if console and not database_url:
            from consumer.store.local_postgres import local_postgres
            try:
                database_url = cleanup.enter_context(local_postgres())
            except RuntimeError as err:
                print(f"demo: --console needs an event store: {err}, or pass --database-url",
                      file=sys.stderr)
                return 2
        with native_logs_to(None if verbose else output_dir / NATIVE_LOG):
            return _run(clip, seconds, cameras, output_dir, models_dir, database_url, then,
                        console_port if console else None)


def _run(clip: Path, seconds: float, cameras: int, output_dir: Path, models_dir: Path,
         database_url: str | None, then: Callable[[LocalStack], None] | None,
         console_port: int | None) -> int:
    from consumer.run import build_processors
    from consumer.streams.status import status_lines
    from consumer.streams.supervisor import StreamSupervisor
    from infra.local.firehose import FirehoseBridge
    from infra.local.stack import LocalStack

    names = [f"demo-cam-{i + 1}" for i in range(cameras)]
    print(f"starting the local stack; {cameras} simulated cameras loop {clip.name}")
    with LocalStack() as stack:
        endpoints = stack.endpoints
        stack.client("s3").create_bucket(Bucket=BUCKET)
        kinesis = stack.client("kinesis")
        kinesis.create_stream(StreamName=DATA_STREAM, ShardCount=1)
        firehose = FirehoseBridge(kinesis, stack.client("s3"), DATA_STREAM, BUCKET,
                                  buffer_seconds=FIREHOSE_BUFFER_SECONDS).start()
        config = load_config(data=demo_config(endpoints, names, models_dir), environ={})
        processors = build_processors(config)
        camera_log = output_dir / "cameras.log"
        cameras_process = subprocess.Popen(
            [sys.executable, "-m", "producer_sim", "run", "--source", str(clip),
             "--cameras", str(cameras), *[arg for n in names for arg in ("--stream", n)],
             "--endpoint-url", endpoints["kinesisvideo"], "--create-stream",
             "--duration", f"{seconds:.0f}"],
            stdout=camera_log.open("w"), stderr=subprocess.STDOUT, cwd=REPO)
        _wait_for_streams(stack, names)
        service = StreamSupervisor(config, processors).start()
        stop = threading.Event()
        runner = threading.Thread(target=service.run, args=(stop,), daemon=True)
        runner.start()
        started = time.monotonic()
        try:
            while time.monotonic() - started < seconds + 4:
                time.sleep(5)
                print(f"--- {time.monotonic() - started:4.0f} s")
                for line in status_lines(service):
                    print("  " + line)
        except KeyboardInterrupt:
            print("interrupted: stopping")
        cameras_process.terminate()
        cameras_process.wait(15)
        stop.set()
        runner.join(5)
        service.shutdown()
        for processor in processors:
            processor.close()
        firehose.stop()
        code = _summarise(stack, service, names, output_dir)
        if not _downstream(stack, output_dir, database_url):
            code = 1
        if then is not None:
            then(stack)
        if console_port is None:
            print(f"\nconsole: python -m consumer demo --console serves these events at "
                  f"http://127.0.0.1:{CONSOLE_PORT}/console/ after the summary")
            return code
        return _console(stack, config, database_url, console_port) or code


def _downstream(stack, output_dir: Path, database_url: str | None) -> bool:
    """Copy the lake to `output_dir/lake` and, given a database, sync the event store; print
    how to look at both. False when the store could not be synced."""
    from consumer.lake.sync import sync_lake
    lake = output_dir / "lake"
    fetched, _kept = sync_lake(stack.client("s3"), BUCKET, "", lake)
    print(f"\nlake: {fetched} objects (the records as Firehose delivers them, and the pose "
          f"sequences) copied to {lake}/; SQL over them:")
    print(f"  kvs-analytics query --lake {lake} --report events-per-hour")
    print(f"  kvs-analytics query --lake {lake} "
          f"\"SELECT stream, count(*) AS frames, sum(persons) AS persons FROM frames GROUP BY 1\"")
    if not database_url:
        print("event store: not synced (pass --database-url, or set "
              "KVS_ANALYTICS_DATABASE_URL, for a PostgreSQL server)")
        return True
    from consumer.store.database_url import display_dsn
    from consumer.store.sync import sync
    from consumer.store.writer import StoreUnavailable, StoreWriter
    writer = StoreWriter(database_url, attempts=2)
    try:
        totals = sync(writer, stack.client("kinesis"), DATA_STREAM).totals
    except StoreUnavailable as err:
        print(f"event store: {err}", file=sys.stderr)
        return False
    finally:
        writer.close()
    print(f"event store: {totals.records} records filed ({totals.events} event records) into "
          f"{display_dsn(database_url)}; kvs-analytics serve --database-url URL serves them")
    return True


def _console(stack, config, database_url: str, port: int) -> int:
    """Serve the console over the demo's store and stack until Ctrl-C; the exit status."""
    from consumer.api.settings import ApiSettings
    from consumer.console.app import create_server
    from consumer.console.cli import Server, serve
    from consumer.console.fleet import FleetReader
    from consumer.console.pages import ConsoleOptions
    settings = ApiSettings(database_url, config.console.url_expiry, stack.endpoints["s3"],
                           stack.region, "127.0.0.1", port)
    options = ConsoleOptions(config.console.refresh_seconds, config.events,
                             FleetReader(stack.client("dynamodb"), config.checkpoint.table))
    app = create_server(settings, options, s3_client=stack.client("s3"))
    print("\nconsole (Ctrl-C stops it and the local stack):")
    return serve(Server(app, settings), on_listening=lambda url: print(
        f"  {url}console/", flush=True))


def _wait_for_streams(stack, names: list[str], timeout: float = 30) -> None:
    client = stack.client("kinesisvideo")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        existing = {s["StreamName"] for s in client.list_streams()["StreamInfoList"]}
        if set(names) <= existing:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the simulated cameras did not create {names} in {timeout:.0f} s")


def read_all_records(kinesis, stream: str) -> list[dict]:
    """The decoded JSON records of a data stream."""
    return [json.loads(record["Data"]) for record in replay.read_all_records(kinesis, stream)]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _summarise(stack, service, names: list[str], output_dir: Path) -> int:
    everything = read_all_records(stack.client("kinesis"), DATA_STREAM)
    records = [r for r in everything if r.get("RecordType") != "Event"]
    events = [r for r in everything if r.get("RecordType") == "Event"]
    s3 = stack.client("s3")
    objects = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
               for o in page.get("Contents", [])]
    per_stream = Counter(r["InputInformation"]["KinesisVideo"]["StreamName"] for r in records)
    events_per_stream = Counter(r["InputInformation"]["KinesisVideo"]["StreamName"]
                                for r in events)
    persons = Counter()
    for record in records:
        persons[record["InputInformation"]["KinesisVideo"]["StreamName"]] += len(record["Persons"])
    (output_dir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in everything))
    event_media = [r[kind]["Key"] for r in events[:4] for kind in ("Highlight", "Clip")
                   if kind in r and r[kind]["Key"] in objects]
    for key in [k for k in objects if k.endswith(".jpg") and "/events/" not in f"/{k}"][:6] + \
            [k for k in objects if k.endswith(".parquet")][:2] + event_media:
        target = output_dir / "s3" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    if events:
        print("\nevents (zone 'stage': x 0.55-0.9, y 0.2-0.95 of the picture)")
        for r in events[:12]:
            video = r["InputInformation"]["KinesisVideo"]
            highlight = r.get("Highlight", {}).get("Key")
            lost = r["Details"].get("reason") == "lost"
            print(f"  {video['StreamName']:<12} {r['EventType']:<10} {r['Rule']:<6} "
                  f"track {r['TrackId']!s:<3} at {time.strftime('%H:%M:%S', time.gmtime(r['StartTimestamp']))}"
                  f"{' (track lost: not seen since)' if lost else ''}"
                  f"{'  highlight ' + str(output_dir / 's3' / highlight) if highlight in event_media else ''}")
    print("\nsummary")
    print(f"{'camera':<12} {'fragments':>9} {'analysed':>8} {'persons':>7} {'records':>7} "
          f"{'events':>6} {'jpegs':>5} {'poses':>5} {'lag p50':>7} {'lag max':>7}  checkpoint")
    ok = True
    for name in names:
        session = service.session_named(name)
        stats = session.stats if session else None
        mine = [k for k in objects if f"stream={name}/" in k]
        jpegs = sum(k.endswith(".jpg") and "/events/" not in f"/{k}" for k in mine)
        poses = sum(k.endswith(".parquet") for k in mine)
        checkpoint = service.keeper.saved.get(session.arn) if session else None
        at_last = checkpoint is not None and checkpoint == (stats.last_fragment if stats else None)
        print(f"{name:<12} {stats.fragments if stats else 0:>9} "
              f"{stats.frames_analysed if stats else 0:>8} {persons[name]:>7} "
              f"{per_stream[name]:>7} {events_per_stream[name]:>6} {jpegs:>5} {poses:>5} "
              f"{_seconds(stats.lag_percentile(0.5) if stats else None):>7} "
              f"{_seconds(stats.lag_percentile(1.0) if stats else None):>7}  "
              f"{'-' if checkpoint is None else '...' + str(checkpoint)[-10:]}"
              f"{' (last fragment read)' if at_last else ''}")
        ok = ok and per_stream[name] > 0
    print(f"\nrecords read back from Kinesis: {len(records)} frame records, {len(events)} "
          f"event records; objects in s3://{BUCKET}: {len(objects)}")
    native = ", native.log" if (output_dir / NATIVE_LOG).exists() else ""
    print(f"outputs copied to {output_dir}/: records.jsonl, s3/ (sample JPEGs, pose "
          f"sequences, event highlights and clips), cameras.log{native}")
    return 0 if ok else 1
