"""The health endpoint, its probes and the JSON logs: the configuration keys, the endpoint
before a supervisor is attached, the Prometheus buckets of a `StageTimes` histogram, the EMF
error count, and, against a real consumer process on the local stack, `/readyz` turning
unready (503 naming the stream) while S3 is cut off by the fault proxy as video keeps arriving,
and ready again once S3 is back, with `/healthz` 200 throughout."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml

from consumer.config import ConfigError, load_config
from consumer.fleet.lease_table import LeaseTable
from consumer.fleet.processes import HEALTH_PORT_VARIABLE, child_environments
from consumer.observe.emf import EmfEmitter
from consumer.observe.histograms import EDGES, dense, interval_max, prometheus_buckets
from consumer.observe.logs import JsonFormatter
from consumer.observe.server import HealthServer
from consumer.pipeline.stage_times import StageTimes
from infra.local.limits import Limits
from infra.local.stack import LocalStack

from .conftest import REPO
from .faults.harness import TABLE, Run, wait_for
from .health_helpers import free_port, get, get_json, log_lines, scrape, value

BASE = {"streams": {"names": ["cam-1"]}, "outputs": {"kinesis": {"stream": "records"}}}


# --- configuration ---------------------------------------------------------------------------

def test_health_and_log_format_keys_and_their_defaults():
    config = load_config(data=BASE, environ={})
    assert config.health.port == 0  # off outside the container
    assert config.health.host == "0.0.0.0"
    assert config.health.emf is False and config.health.fleet == "kvs-analytics"
    assert config.logging.format == "text"
    image = load_config(data=BASE, environ={"KVSA_HEALTH__PORT": "8080",
                                            "KVSA_LOGGING__FORMAT": "json"})
    assert image.health.port == 8080 and image.logging.format == "json"
    with pytest.raises(ConfigError, match="logging.format"):
        load_config(data={**BASE, "logging": {"format": "xml"}}, environ={})
    with pytest.raises(ConfigError, match="health.port"):
        load_config(data={**BASE, "health": {"port": 70000}}, environ={})
    with pytest.raises(ConfigError, match="health.stuck_secs: unknown key"):
        load_config(data={**BASE, "health": {"stuck_secs": 3}}, environ={})


def test_each_child_process_gets_its_own_health_port():
    config = load_config(data={**BASE, "health": {"port": 8080}}, environ={})
    envs = child_environments(config, 3, False, {}, gpus=lambda: 1)
    assert [env[HEALTH_PORT_VARIABLE] for env in envs] == ["8080", "8081", "8082"]
    off = load_config(data=BASE, environ={})
    assert all(HEALTH_PORT_VARIABLE not in env
               for env in child_environments(off, 2, False, {}, gpus=lambda: 1))


def test_a_health_port_in_use_is_exit_3_naming_it(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "consumer.yaml"
        path.write_text(yaml.safe_dump({**BASE, "health": {"port": port, "host": "127.0.0.1"}}))
        result = subprocess.run([sys.executable, "-m", "consumer", "run", "--config", str(path)],
                                check=False, capture_output=True, text=True, timeout=60,
                                cwd=REPO)
    assert result.returncode == 3, result.stderr
    assert f"health.port: cannot listen on 127.0.0.1:{port}" in result.stderr


# --- the endpoint, the buckets, the EMF count, the log lines -----------------------------------

def test_the_endpoint_before_the_supervisor_has_started():
    health = load_config(data=BASE, environ={}).health
    server = HealthServer(health, host="127.0.0.1", port=0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert get_json(base + "/healthz") == (200, {"alive": True, "state": "starting"})
        status, body = get_json(base + "/readyz")
        assert status == 503 and body["ready"] is False and "starting" in body["reason"]
        samples = scrape(base)  # the process collector's figures; none of ours yet
        assert value(samples, "process_cpu_seconds_total") is not None
        assert not [name for name, _ in samples if name.startswith("kvsa_")]
        assert get(base + "/nothing")[0] == 404
        server.stopping()
        assert get_json(base + "/readyz")[1]["reason"] == "shutting down"
    finally:
        server.close()


def test_prometheus_buckets_are_cumulative_at_exact_bucket_edges():
    times = StageTimes()
    samples = [0.00002, 0.0005, 0.004, 0.004, 0.3, 2.5, 2.5, 40.0, 99999.0]
    for seconds in samples:
        times.add("x", seconds)
    figures = times.snapshot()["x"]
    buckets, total = prometheus_buckets(figures)
    assert buckets[-1] == ("+Inf", len(samples))
    assert total == pytest.approx(sum(samples))
    for le, count in buckets[:-1]:
        assert count == sum(1 for s in samples if s < float(le)), le
    assert [float(le) for le, _ in buckets[:-1]] == list(EDGES)
    assert prometheus_buckets(None) == ([(le, 0.0) for le, _ in buckets[:-1]] + [("+Inf", 0.0)],
                                        0.0)
    before = dense(figures)
    times.add("x", 7.0)
    times.add("x", 0.1)
    later = times.snapshot()["x"]
    assert interval_max(before, dense(later), later["max"]) == pytest.approx(7.0, rel=0.07)
    assert interval_max(dense(later), dense(later), later["max"]) is None


def test_emf_errors_count_what_happened_in_the_interval():
    def stats(**counts):
        return SimpleNamespace(failures=0, **counts)
    session = SimpleNamespace(key=1, stats=SimpleNamespace(decode_errors=2,
                                                           lag_times=StageTimes()))
    supervisor = SimpleNamespace(
        worker_id="w", kinesis=SimpleNamespace(stats=lambda: stats()),
        s3=SimpleNamespace(stats=lambda: stats()), analyzers=[SimpleNamespace(failures=0)],
        sessions={"arn-1": session}, restarts={})
    emitter = EmfEmitter(supervisor, "fleet-a", out=None)
    assert emitter.line()["Errors"] == 2  # the first line counts everything so far
    session.stats.decode_errors = 5
    supervisor.restarts["arn-1"] = SimpleNamespace(count=1)
    supervisor.analyzers[0].failures = 1
    session.stats.lag_times.add("lag", 3.0)
    line = emitter.line()
    assert line["Errors"] == 3 + 1 + 1
    assert line["LagSeconds"] == pytest.approx(3.0, rel=0.07)
    assert line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == "LagSeconds"
    # a new session of the stream counts from zero: its count is new, not negative
    supervisor.sessions["arn-1"] = SimpleNamespace(key=2, stats=SimpleNamespace(
        decode_errors=1, lag_times=StageTimes()))
    line = emitter.line()
    assert line["Errors"] == 1 and "LagSeconds" not in line
    assert [m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == ["Errors"]


def test_json_log_lines_carry_the_stream_and_fragment():
    formatter = JsonFormatter()

    def line(message, *args, **extra):
        record = logging.LogRecord("consumer.x", logging.WARNING, __file__, 1, message, args,
                                   None)
        record.__dict__.update(extra)
        return json.loads(formatter.format(record))

    named = line("stream %s: fragment %d: damaged; skipping", "cam-1", 91343852333181432)
    assert named["stream"] == "cam-1" and named["fragment"] == "91343852333181432"
    assert named["level"] == "WARNING" and named["logger"] == "consumer.x"
    assert named["time"].endswith("Z") and "T" in named["time"]
    assert line("stream %s: lease won", "cam-2")["stream"] == "cam-2"
    assert "fragment" not in line("stream %s: lease won", "cam-2")
    arn = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam-3/1"
    assert line("stream %s: fragment %d has outputs", arn, 7)["stream"] == arn
    assert "stream" not in line("Kinesis stream %s: PutRecords failed", "records")
    explicit = line("a message", stream="cam-4", fragment=12)
    assert (explicit["stream"], explicit["fragment"]) == ("cam-4", "12")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("c", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())
    assert "ValueError: boom" in json.loads(formatter.format(record))["exception"]


# --- a real consumer, S3 cut off while video keeps arriving -------------------------------------

@pytest.fixture(scope="module")
def stack():
    with LocalStack(limits=Limits(getmedia_idle_seconds=1.0)) as local:
        LeaseTable(local.client("dynamodb"), TABLE, "observer").ensure_table()
        yield local


@pytest.mark.slow
def test_readyz_names_a_stuck_stream_while_s3_is_cut_and_recovers(stack, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run = Run(stack, tmp_path, camera_seconds=50, proxied=("s3",), config={
        "health": {"port": port, "host": "127.0.0.1", "stuck_seconds": 4},
        "logging": {"format": "json"}})
    try:
        run.start_consumer()
        wait_for(lambda: run.checkpoint_or_none() is not None, 30, "a first checkpoint")
        wait_for(lambda: get_json(base + "/readyz")[0] == 200, 10, "/readyz 200")
        run.s3_proxy.cut()
        cut = time.monotonic()
        wait_for(lambda: get_json(base + "/readyz")[0] == 503, 25, "/readyz 503")
        unready = time.monotonic() - cut
        status, body = get_json(base + "/readyz")
        assert status == 503, body
        (stuck,) = body["stuck"]
        assert stuck["stream"] == run.name and stuck["waiting_seconds"] >= 4
        assert "checkpoint not advanced" in stuck["reason"] and run.name in body["reason"]
        assert body["lease_table"]["reachable"] is True
        assert get_json(base + "/healthz")[0] == 200  # alive: only stuck
        assert value(scrape(base), "kvsa_stream_stuck", stream=run.name) == 1
        run.s3_proxy.restore()
        restored = time.monotonic()
        wait_for(lambda: get_json(base + "/readyz")[0] == 200, 30, "/readyz 200 again")
        print(f"S3 cut: unready after {unready:.1f} s (stuck_seconds 4), ready again "
              f"{time.monotonic() - restored:.1f} s after S3 came back")
        assert value(scrape(base), "kvsa_stream_stuck", stream=run.name) == 0
    finally:
        run.stop()
    logs, _, other = log_lines(run.log)
    assert logs and not other, other[:5]
    assert any(line.get("stream") == run.name and "lease won" in line["message"]
               for line in logs)


def test_the_stack_alarms_read_what_the_emf_lines_carry():
    """The template's alarms (moto does not create alarms: read the template) name the
    namespace, metrics, statistics and dimension the EMF lines carry."""
    from consumer.observe.emf import NAMESPACE

    from .infra.test_template import load_template
    resources = load_template()["Resources"]
    alarms = {r["Properties"]["MetricName"]: r["Properties"] for r in resources.values()
              if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) == {"LagSeconds", "Errors"}
    assert alarms["LagSeconds"]["Statistic"] == "Maximum"
    assert alarms["Errors"]["Statistic"] == "Sum"
    for alarm in alarms.values():
        assert alarm["Namespace"] == NAMESPACE
        assert alarm["Dimensions"] == [{"Name": "Fleet", "Value": {"Ref": "NamePrefix"}}]
    line = EmfEmitter(SimpleNamespace(worker_id="w", kinesis=SimpleNamespace(
        stats=lambda: SimpleNamespace(failures=0)), s3=None, analyzers=[], sessions={},
        restarts={}), "kvsa").line()
    (metrics,) = line["_aws"]["CloudWatchMetrics"]
    assert metrics["Namespace"] == NAMESPACE and metrics["Dimensions"] == [["Fleet"]]
    assert line["Fleet"] == "kvsa" and "Errors" in line
