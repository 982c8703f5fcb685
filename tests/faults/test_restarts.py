"""Restarts and ownership changes against real consumer processes: SIGKILL at random moments, a
restart hours after a crash (the consumer's clock shifted by libfaketime), a lease taken from a
live worker mid-fragment, and a stream deleted while it is read. Afterwards what a user would
check is read back (the data stream, the bucket, the lease table): no record id twice, every
frame of every checkpointed fragment delivered, and how long the recovery took.

Several scenarios need records delivered past the checkpoint at the moment of the fault (a
fragment partly delivered). A consumer delivers a real-time fragment in a fraction of a second,
so waiting for that moment by polling would be a race; instead the consumer's S3 is cut through
the fault proxy: each frame's JPEG upload is queued before its record is sent, so records go
out until the S3 writer's queue is full (`upload_concurrency` * 3 uploads), then the session
blocks, with the fragment's checkpoint held. A crash or a lease change then finds exactly the
state a slow S3 leaves in production.
"""

from __future__ import annotations

import glob
import os
import random
import re
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import yaml
from botocore.exceptions import ClientError

from consumer.config import Sampling
from consumer.fleet.lease_table import Lease, LeaseTable
from consumer.pipeline.decode import StreamDecoder
from consumer.wire import iter_fragments

from ..delivery_checks import delivered_frames
from .harness import FPS, TABLE, Run, deep_merge, wait_for

pytestmark = pytest.mark.slow

LEASE = 3  # lease_seconds: renewals every second; a dead owner's lease is taken ~3 s after
KILLS = 5
READ_BACK = re.compile(r"(\d+) records already delivered after checkpoint")
TOTALS = re.compile(r"records sent (\d+) \(throttled \d+, failed \d+, fenced (\d+)\)")
STATUS_CALLS = re.compile(r"(?m)^(\S+ \S+) INFO .*total: worker .*AWS API calls (\d+)$")
GAP = re.compile(r"\+(\d+(?:\.\d+)?)([smhd]?)")
FAKETIME_SITE = Path(__file__).parent / "faketime_site"
GAP_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# --- helpers ---------------------------------------------------------------------------------

def records_past(records: list[dict], name: str, checkpoint: int | None) -> int:
    """Frame records of stream `name` for fragments after `checkpoint` (all, if None)."""
    got = delivered_frames(records).get(name, {})
    return sum(len(frames) for number, frames in got.items()
               if checkpoint is None or number > checkpoint)


def lease_of(stack, name: str) -> Lease:
    """The stream's lease item, read consistently."""
    table = LeaseTable(stack.client("dynamodb"), TABLE, "observer")
    arn = next(one.stream_arn for one in table.snapshot().leases if one.stream_name == name)
    return table.lease(arn)


def read_back_counts(log: Path) -> list[int]:
    """What each session of this consumer log found already delivered when it started."""
    return [int(n) for n in READ_BACK.findall(log.read_text())]


def writer_totals(log: Path) -> tuple[int, int]:
    """(records sent, records fenced) in the consumer's latest status line."""
    found = TOTALS.findall(log.read_text())
    assert found, f"no status line in {log.name}"
    sent, fenced = found[-1]
    return int(sent), int(fenced)


def assert_no_traceback(run: Run) -> None:
    for log in run.logs:
        assert "Traceback" not in log.read_text(), f"a traceback in {log.name}"


def wait_in_log(log: Path, text: str, timeout: float) -> float:
    """Seconds until `text` appears in the log."""
    return wait_for(lambda: text in log.read_text(), timeout, f"{text!r} in {log.name}")


def stall_mid_fragment(run: Run, settle: float = 0.0, timeout: float = 40) -> int:
    """Cut the consumer's S3 and wait until records of a fragment after the stream's checkpoint
    are delivered (and, with `settle`, none more for that long: the session has stopped on its
    full upload queue); returns how many records are past the checkpoint then."""
    run.s3_proxy.cut()
    state = {"past": -1, "since": time.monotonic()}

    def stalled() -> bool:
        past = records_past(run.records(), run.name, run.checkpoint_or_none())
        if past != state["past"]:
            state.update(past=past, since=time.monotonic())
        return past > 0 and time.monotonic() - state["since"] >= settle
    wait_for(stalled, timeout, "records delivered past the checkpoint")
    return state["past"]


def status_count(log: Path) -> int:
    return len(TOTALS.findall(log.read_text()))


def faketime_env(gap: str) -> dict[str, str]:
    """Environment that runs a Python process with its wall clock `gap` ahead (libfaketime).

    Found here with libfaketime 0.9.10: the `faketime` command forks the program and waits for
    it, so a signal sent to it does not reach the consumer: the library is preloaded directly.
    Shifting the monotonic clock too makes Python's first timed wait (Event.wait, Queue.get)
    last the whole gap, so only the wall clock is shifted (FAKETIME_DONT_FAKE_MONOTONIC); that
    mode breaks `time.sleep` (EINVAL), which `faketime_site/sitecustomize.py` replaces with an
    equivalent wait. A missing library fails under CI and skips, with the reason, elsewhere."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
                   + glob.glob("/usr/lib/faketime/libfaketime.so.1")
                   + glob.glob("/usr/local/lib/faketime/libfaketime.so.1"))
    if not found:
        message = ("libfaketime (Debian package faketime) is needed to simulate a long gap: "
                   "apt-get install -y faketime")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    path = os.pathsep.join(filter(None, [str(FAKETIME_SITE), os.environ.get("PYTHONPATH")]))
    return {"LD_PRELOAD": found[0], "FAKETIME": gap, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "PYTHONPATH": path}


def gap_seconds(gap: str) -> float:
    """Seconds in a relative libfaketime offset such as +3h, +90m, +1d or +4000."""
    match = GAP.fullmatch(gap)
    if match is None:
        raise ValueError(f"FAULT_GAP must be a forward offset like +3h, +90m, +1d: {gap!r}")
    return float(match.group(1)) * GAP_UNITS[match.group(2)]


class Fleet(Run):
    """A `Run` whose consumers are workers with their own ids and config changes."""

    def start_worker(self, worker_id: str, changes: dict | None = None) -> subprocess.Popen:
        """Start a consumer with `checkpoint.worker_id` (and `changes`) over the run's config;
        its log is the newest of `self.logs`."""
        base = yaml.safe_load((self.tmp_path / "consumer.yaml").read_text())
        config = self.tmp_path / f"{worker_id}.yaml"
        config.write_text(yaml.safe_dump(deep_merge(
            base, deep_merge({"checkpoint": {"worker_id": worker_id}}, changes or {}))))
        self.config = config
        return self.start_consumer()


class Witness:
    """Reads a stream with GetMedia from its beginning while it exists and decodes every
    fragment as a clean run would: the frames each fragment holds, known even after the stream
    has been deleted (when delivery_checks can no longer read it)."""

    def __init__(self, stack, name: str, fps: float | None):
        self.stack, self.name = stack, name
        self.sampling = Sampling(mode="fps", fps=fps) if fps else Sampling(mode="all")
        self.frames: dict[int, set[int]] = {}
        self.error: Exception | None = None
        self.gone = threading.Event()
        self._thread = threading.Thread(target=self._read, name="witness", daemon=True)

    def start(self) -> Witness:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert self.gone.is_set(), "the witness still reads the deleted stream"
        assert self.error is None, f"the witness failed: {self.error!r}"

    def _read(self) -> None:
        decoder = StreamDecoder(self.name, "arn", self.sampling)
        selector = {"StartSelectorType": "EARLIEST"}
        media = self.stack.client("kinesis-video-media")
        try:
            while True:
                try:
                    payload = media.get_media(StreamName=self.name,
                                              StartSelector=selector)["Payload"]
                except ClientError as err:
                    code = err.response["Error"]["Code"]
                    if code == "ResourceNotFoundException":
                        return
                    if code != "ClientLimitExceededException":
                        raise
                    time.sleep(0.5)  # the consumer shares the stream's GetMedia call rate
                    continue
                with payload:
                    for fragment in iter_fragments(payload):
                        if fragment.error is not None or fragment.fragment_number is None:
                            break
                        self.frames[fragment.fragment_number] = {
                            f.source.frame_index for f in decoder.decode(fragment)}
                if self.frames:  # the response ended (idle or deleted): resume after the last
                    selector = {"StartSelectorType": "FRAGMENT_NUMBER",
                                "AfterFragmentNumber": str(max(self.frames))}
        except Exception as err:  # noqa: BLE001 - reported by join(), in the test's thread
            self.error = err
        finally:
            decoder.close()
            self.gone.set()


# --- scenarios -------------------------------------------------------------------------------

def test_five_sigkills_at_random_moments_repeat_and_lose_nothing(stack, tmp_path):
    """SIGKILL 5 times, each 2-6 s (seeded random) after the consumer resumed, restart each
    time (the new process takes the lease once it has seen it expire); one kill, chosen by the
    seed, comes while a fragment is partly delivered (S3 stalled). Then run until the
    checkpoint reaches the camera's last fragment. FAULT_SEED=<the printed seed> repeats a run."""
    seed = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(10 ** 6))
    rng = random.Random(seed)
    stalled_kill = rng.randrange(KILLS)
    print(f"\nSIGKILL x{KILLS}: seed {seed} (FAULT_SEED={seed} repeats it)")
    run = Run(stack, tmp_path, camera_seconds=50, config={"checkpoint": {"lease_seconds": LEASE}})
    past_at_kills = []
    try:
        run.start_consumer()
        wait_in_log(run.log, "lease won", 30)
        for kill in range(KILLS):
            delay = rng.uniform(2, 6)
            time.sleep(delay)
            stalled = kill == stalled_kill
            if stalled:
                stall_mid_fragment(run)
            run.kill_consumer()
            held = run.checkpoint_or_none()
            past = records_past(run.records(), run.name, held)
            past_at_kills.append(past)
            run.s3_proxy.restore()
            restarted = time.monotonic()
            run.start_consumer()
            owned = wait_in_log(run.log, "lease won", 30)
            live = run.camera.poll() is None
            moved = wait_for(lambda held=held: (run.checkpoint_or_none() or 0) > (held or 0), 30,
                             "the checkpoint moving after the restart") if live else None
            print(f"kill {kill + 1} after {delay:.1f} s{' (S3 stalled)' if stalled else ''}: "
                  f"{past} records past the checkpoint; restarted consumer owned the stream "
                  f"{owned:.1f} s after its start, read back {read_back_counts(run.log)}, "
                  + (f"checkpoint moving {time.monotonic() - restarted:.1f} s after the restart"
                     if moved is not None else "camera already stopped"))
        run.camera.wait(90)
        final = run.last_fragment()
        took = wait_for(lambda: run.checkpoint_or_none() == final, 60,
                        "the checkpoint at the camera's last fragment")
        print(f"checkpoint at the camera's last fragment {took:.1f} s after it stopped; "
              f"{len(run.records())} records")
    finally:
        run.stop()
    assert past_at_kills[stalled_kill] > 0  # that kill did find a fragment partly delivered
    run.check_everything_delivered_once()
    assert_no_traceback(run)


def test_a_restart_hours_after_a_crash_repeats_nothing(stack, tmp_path):
    """Records past the checkpoint are delivered when the consumer is SIGKILLed; it is
    restarted with its clock FAULT_GAP ahead (default +3h; any +N[smhd]): the read-back window
    is taken from when the checkpoint was written, so it still finds them."""
    gap = os.environ.get("FAULT_GAP", "+3h")
    shift = gap_seconds(gap)
    shifted = faketime_env(gap)
    run = Run(stack, tmp_path, camera_seconds=30, fragment_seconds=10, sampling="all",
              config={"checkpoint": {"lease_seconds": LEASE}})
    try:
        run.start_consumer()
        wait_for(lambda: run.checkpoint_or_none() is not None, 60, "a first checkpoint")
        past = stall_mid_fragment(run)
        run.kill_consumer()
        run.s3_proxy.restore()
        restarted = time.monotonic()
        run.start_consumer(env=shifted)
        owned = wait_in_log(run.log, "lease won", 30)
        # the restarted consumer took the lease, writing updatedAt with its own clock
        ahead = lease_of(stack, run.name).updated_at - time.time()
        run.camera.wait(60)
        final = run.last_fragment()
        took = wait_for(lambda: run.checkpoint_or_none() == final, 60,
                        "the checkpoint at the camera's last fragment")
        print(f"\nrestart {gap} after a crash ({past} records past the checkpoint): lease "
              f"written {ahead:.0f} s ahead of the real clock, owned {owned:.1f} s "
              f"after the restart, read back {read_back_counts(run.log)}, last checkpoint "
              f"{time.monotonic() - restarted:.1f} s after the restart ({took:.1f} s after "
              "the camera stopped)")
    finally:
        run.stop()
    assert ahead > 0.9 * shift - 60, "the restarted consumer's clock was not shifted"
    run.check_everything_delivered_once()
    assert read_back_counts(run.log) and read_back_counts(run.log)[0] >= past > 0
    assert_no_traceback(run)


def test_a_lease_taken_mid_fragment_fences_the_old_owner(stack, tmp_path):
    """Two workers, one stream: while worker A is mid-fragment, the lease is taken for worker B
    with the conditional write a stealing worker makes (owner and counter as last seen). A
    notices at its next renewal, sends nothing more for the stream (what it still had is
    fenced); B resumes after the checkpoint, reading back what A delivered.

    (One stream between two workers is never stolen by balancing: each one's target is one.
    B finds the lease already in its name, so it skips the hand-off wait a balancing steal
    makes; A's session stays held by its stalled S3 until A has noticed, so the fence, not that
    wait, is what the test exercises.)"""
    run = Fleet(stack, tmp_path, camera_seconds=30, fragment_seconds=10, sampling="all",
                config={"checkpoint": {"lease_seconds": LEASE}})
    a, b = f"a-{run.name}", f"b-{run.name}"
    table = LeaseTable(stack.client("dynamodb"), TABLE, "observer")
    worker_a = None
    try:
        worker_a = run.start_worker(a)
        log_a = run.log
        wait_for(lambda: run.checkpoint_or_none() is not None, 60, "A's first checkpoint")
        # B's uploads go straight to S3: only A's are cut below
        run.start_worker(b, {"aws": {"endpoints": {"s3": stack.endpoints["s3"]}}})
        log_b = run.log
        wait_in_log(log_b, "total: worker", 30)  # B runs its lease loop (and holds nothing)
        past = stall_mid_fragment(run, settle=1.0)
        printed = status_count(log_a)  # A's totals as they are now, stalled: a status line later
        wait_for(lambda: status_count(log_a) > printed, 10, "A's next status line")
        sent_before = writer_totals(log_a)[0]
        lease = lease_of(stack, run.name)
        assert lease.owner == a
        assert LeaseTable(stack.client("dynamodb"), TABLE, b).take(lease) is not None
        taken = time.monotonic()
        fenced_after = wait_in_log(log_a, "lease lost; stopping it", 3 * LEASE)
        won_after = wait_in_log(log_b, "lease won", 3 * LEASE)
        wait_in_log(log_b, "records already delivered", 30)
        run.s3_proxy.restore()  # A's blocked session goes on: what it still had must be fenced
        run.camera.wait(60)
        final = run.last_fragment()
        wait_for(lambda: run.checkpoint_or_none() == final, 60,
                 "B's checkpoint at the camera's last fragment")
        resumed = time.monotonic() - taken
        wait_for(lambda: writer_totals(log_a)[1] > 0, 40, "A fencing the records it held")
        sent_after, fenced = writer_totals(log_a)
        print(f"\nlease taken mid-fragment ({past} records past the checkpoint): A noticed "
              f"{fenced_after:.1f} s later, B owned the stream after {won_after:.1f} s and read "
              f"back {read_back_counts(log_b)}; A fenced {fenced} records; checkpoint at the "
              f"last fragment {resumed:.1f} s after the take")
        worker_a.send_signal(signal.SIGTERM)
        assert worker_a.wait(20) == 0
    finally:
        if worker_a is not None and worker_a.poll() is None:
            worker_a.kill()
        run.stop()
    assert sent_after == sent_before, "A sent records after its lease was taken"
    # the fence at work is said as such, not as a delivery failure
    assert "could not be delivered" not in log_a.read_text()
    assert read_back_counts(log_b)[0] >= past > 0
    assert table.lease(lease.stream_arn).owner is None  # B released it on SIGTERM
    run.check_everything_delivered_once()
    assert_no_traceback(run)


def test_a_stream_deleted_while_read_lets_go_of_its_lease(stack, tmp_path):
    """The camera's stream is deleted while the consumer reads it: the consumer keeps running
    without spinning (no GetMedia retries, a few API calls a second, little CPU), says the
    stream is gone, removes its lease and stops reporting the stream; what it checkpointed
    before was delivered once. GetMedia cannot read a deleted stream, so the frames each
    fragment held are captured by a witness that reads the stream until it is deleted."""
    run = Run(stack, tmp_path, camera_seconds=60)
    witness = None
    try:
        run.start_consumer()
        witness = Witness(stack, run.name, FPS).start()
        wait_for(lambda: run.checkpoint_or_none() is not None and len(run.checkpoints) >= 5,
                 60, "five checkpoints")
        arn = lease_of(stack, run.name).stream_arn
        stack.client("kinesisvideo").delete_stream(StreamARN=arn)
        table = LeaseTable(stack.client("dynamodb"), TABLE, "observer")

        def lease_gone() -> bool:
            run.checkpoint_or_none()  # the last checkpoints written before it went
            return table.lease(arn) is None
        gone_after = wait_for(lease_gone, 15, "the deleted stream's lease removed")
        witness.join(15)
        process = psutil.Process(run.consumer.pid)
        cpu_before, watched = sum(process.cpu_times()[:2]), time.monotonic()
        time.sleep(6)
        cpu = (sum(process.cpu_times()[:2]) - cpu_before) / (time.monotonic() - watched)
        alive = run.consumer.poll() is None
    finally:
        run.stop()  # SIGTERM: exit 0
    text = run.log.read_text()
    after = text[text.index("deleted; let go and its lease removed"):]
    rate = api_call_rate(after)
    print(f"\nstream deleted: lease removed {gone_after:.1f} s later; then the consumer used "
          f"{cpu:.0%} of a core and made {rate:.1f} AWS API calls a second (relisting every "
          f"second); {len(run.checkpoints)} checkpoints seen before")
    assert alive and "Traceback" not in text
    assert "GetMedia" not in after  # no retrying a stream that is gone
    assert f"stream {run.name}: " not in after.split("SIGTERM received")[0], \
        "the status still reports the deleted stream"
    assert cpu < 0.25 and rate < 10
    written = [int(n) for n in re.findall(rf"'{re.escape(arn)}': (\d+)", text)]
    check_delivered_up_to(run, witness.frames, max(run.checkpoints + written))


def api_call_rate(text: str) -> float:
    """AWS API calls a second between the first and last status lines of a log excerpt."""
    found = [(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp(), int(calls))
             for stamp, calls in STATUS_CALLS.findall(text)]
    assert len(found) >= 2, "fewer than two status lines"
    (first, before), (last, now) = found[0], found[-1]
    return (now - before) / (last - first)


def check_delivered_up_to(run: Run, frames: dict[int, set[int]], checkpoint: int) -> None:
    """No record id twice; every frame of every fragment up to `checkpoint` delivered (as the
    witness decoded them); every JPEG a record names in the bucket."""
    records = run.records()
    ids = [r["RecordId"] for r in records]
    assert len(ids) == len(set(ids)), "a record id was delivered twice"
    assert run.checkpoints == sorted(run.checkpoints), "a checkpoint moved backwards"
    got = delivered_frames(records).get(run.name, {})
    expected = {number: want for number, want in frames.items() if number <= checkpoint}
    assert checkpoint in expected and len(expected) >= 3
    for number, want in expected.items():
        assert got.get(number) == want, number
    keys = {o["Key"] for page in run.stack.client("s3").get_paginator(
        "list_objects_v2").paginate(Bucket=run.bucket) for o in page.get("Contents", [])}
    assert all(f["Key"] in keys for r in records for f in r.get("Frames", []))
