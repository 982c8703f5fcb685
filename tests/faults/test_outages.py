"""Dependency outages against a real consumer process: a camera streams in real time into the
local KVS service, the consumer (`python -m consumer run`) reads it, and a TCP fault proxy in
front of moto's server cuts S3 off for a while. Afterwards the whole data stream and bucket are
read back: no record twice, every frame of every fragment up to the checkpoint delivered, the
checkpoint monotonic and at the camera's last fragment, with the time the recovery took."""

from __future__ import annotations

import time

import pytest

from .harness import Run, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("outage", [20, 120])
def test_an_s3_outage_delays_the_checkpoint_and_loses_nothing(stack, tmp_path, outage):
    run = Run(stack, tmp_path, camera_seconds=outage + 20)
    try:
        run.start_consumer()
        wait_for(lambda: run.checkpoint_or_none() is not None, 60, "a first checkpoint")
        run.s3_proxy.cut()
        cut_at = time.monotonic()
        while time.monotonic() - cut_at < outage:
            run.checkpoint_or_none()
            time.sleep(0.5)
        held = run.checkpoints[-1]
        run.s3_proxy.restore()
        restored = time.monotonic()
        assert run.s3_proxy.refused > 0  # the consumer did try S3 during the outage
        moved = wait_for(lambda: (run.checkpoint_or_none() or 0) > held, 60,
                         "the checkpoint moving again")
        run.camera.wait(outage + 40)
        final = run.last_fragment()
        took = wait_for(lambda: run.checkpoint_or_none() == final, 90,
                        "the checkpoint at the camera's last fragment")
        print(f"S3 down {outage} s: checkpoint held at ...{str(held)[-6:]}, moving again "
              f"{moved:.1f} s after S3 came back, at the last fragment "
              f"{time.monotonic() - restored:.1f} s after it ({took:.1f} s after the camera "
              "stopped)")
        text = run.log.read_text()
        assert "retrying" in text  # the uploads were retried, not given up
        assert "could not be delivered" not in text
    finally:
        run.stop()
    run.check_everything_delivered_once()


def test_a_stream_killed_before_its_first_checkpoint_repeats_nothing(stack, tmp_path):
    """The first fragment's records are partly delivered when the consumer is SIGKILLed, before
    the stream has any checkpoint: the next run reads them back (the lease shows someone held
    the stream) instead of sending them again."""
    run = Run(stack, tmp_path, camera_seconds=25, fragment_seconds=10, sampling="all")
    try:
        run.camera.wait(40)  # the whole clip is in KVS before the consumer starts
        final = run.last_fragment()
        # S3 cut once the consumer is past its start checks (which look for the bucket) and
        # holds the stream: records go out (JPEG uploads queue behind them) while the first
        # fragment (150 analysed frames) cannot complete, so the kill surely comes before any
        # checkpoint
        run.start_consumer()
        wait_for(run.leased, 60, "the consumer holding the stream")
        run.s3_proxy.cut()
        wait_for(lambda: run.records() and run.checkpoint_or_none() is None, 60,
                 "records delivered before any checkpoint")
        run.kill_consumer()
        run.s3_proxy.restore()
        before = len(run.records())
        assert run.checkpoint_or_none() is None or before > 0
        run.start_consumer()
        wait_for(lambda: run.checkpoint_or_none() == final, 90, "the last checkpoint")
        assert "records already delivered" in run.log.read_text()
    finally:
        run.stop()
    assert before > 0
    run.check_everything_delivered_once()
