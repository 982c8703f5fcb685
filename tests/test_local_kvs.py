"""The local Kinesis Video service, driven by unmodified boto3 clients and raw PutMedia bodies."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from consumer.wire import Frame, iter_fragments, read_fragments, writer
from infra.local.kvs_service import LocalKvsService
from infra.local.limits import Limits
from infra.local.stack import LOCAL_CREDENTIALS

from .kvs_wire_helpers import producer_mkv, put_media


@pytest.fixture(scope="module")
def source(capture):
    """The 8 fragments (444 frames, 640x480 H.264) of a real producer-side capture."""
    return read_fragments(capture("clusters.mkv"))


def clients(kvs):
    def make(name, url=None):
        return boto3.client(name, endpoint_url=url or kvs.endpoint_url, region_name=kvs.region,
                            **LOCAL_CREDENTIALS)
    return make("kinesisvideo"), make("kinesis-video-media"), make("kinesis-video-archived-media")


@pytest.fixture
def kvs():
    with LocalKvsService(limits=Limits(getmedia_idle_seconds=0.5)) as service:
        yield service


def now_ms() -> int:
    return int(time.time() * 1000)


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_control_plane(kvs):
    control, _, _ = clients(kvs)
    arn = control.create_stream(StreamName="cam-1", DataRetentionInHours=2,
                                Tags={"site": "lobby"})["StreamARN"]
    control.create_stream(StreamName="cam-2")
    control.create_stream(StreamName="other")
    assert arn.startswith("arn:aws:kinesisvideo:us-east-1:") and "/cam-1/" in arn
    info = control.describe_stream(StreamName="cam-1")["StreamInfo"]
    assert (info["Status"], info["StreamARN"], info["DataRetentionInHours"]) == ("ACTIVE", arn, 2)
    assert control.describe_stream(StreamARN=arn)["StreamInfo"]["StreamName"] == "cam-1"
    listed = control.list_streams(StreamNameCondition={"ComparisonOperator": "BEGINS_WITH",
                                                       "ComparisonValue": "cam-"})
    assert [s["StreamName"] for s in listed["StreamInfoList"]] == ["cam-1", "cam-2"]
    page = control.list_streams(MaxResults=2)
    assert len(page["StreamInfoList"]) == 2
    rest = control.list_streams(MaxResults=2, NextToken=page["NextToken"])
    assert [s["StreamName"] for s in rest["StreamInfoList"]] == ["other"]

    control.tag_stream(StreamName="cam-1", Tags={"floor": "2"})
    control.untag_stream(StreamARN=arn, TagKeyList=["site"])
    assert control.list_tags_for_stream(StreamName="cam-1")["Tags"] == {"floor": "2"}
    for api in ("PUT_MEDIA", "GET_MEDIA", "LIST_FRAGMENTS", "GET_MEDIA_FOR_FRAGMENT_LIST"):
        assert control.get_data_endpoint(StreamName="cam-1", APIName=api)["DataEndpoint"] \
            == kvs.endpoint_url

    with pytest.raises(ClientError) as err:
        control.create_stream(StreamName="cam-1")
    assert error_code(err) == "ResourceInUseException"
    with pytest.raises(ClientError) as err:
        control.create_stream(StreamName="bad/name")
    assert error_code(err) == "InvalidArgumentException" and "bad/name" in str(err.value)
    control.delete_stream(StreamARN=arn)
    with pytest.raises(ClientError) as err:
        control.describe_stream(StreamName="cam-1")
    assert error_code(err) == "ResourceNotFoundException"


def test_put_media_acks_and_get_media_returns_the_same_frames(kvs, source):
    control, media, archive = clients(kvs)
    control.create_stream(StreamName="cam")
    start = now_ms()
    status, _, acks = put_media(kvs.endpoint_url, "cam", producer_mkv(source, start))
    assert status == 200
    persisted = [a for a in acks if a["EventType"] == "PERSISTED"]
    assert len(persisted) == 8
    numbers = [int(a["FragmentNumber"]) for a in persisted]
    assert numbers == sorted(numbers) and len(set(numbers)) == 8
    assert len(str(numbers[0])) >= 40
    # each fragment: BUFFERING, RECEIVED, PERSISTED, with one number and the cluster timecode
    events = [(a["EventType"], a["FragmentNumber"]) for a in acks if a["EventType"] != "IDLE"]
    for index, number in enumerate(numbers):
        assert events[3 * index:3 * index + 3] == [
            (kind, str(number)) for kind in ("BUFFERING", "RECEIVED", "PERSISTED")]
    assert persisted[0]["FragmentTimecode"] == start

    endpoint = control.get_data_endpoint(StreamName="cam", APIName="GET_MEDIA")["DataEndpoint"]
    response = media.get_media(StreamName="cam", StartSelector={"StartSelectorType": "EARLIEST"})
    fragments = list(iter_fragments(response["Payload"]))
    assert endpoint == kvs.endpoint_url
    assert [f.fragment_number for f in fragments] == numbers
    assert [f.continuation_token for f in fragments] == [str(n) for n in numbers]
    assert fragments[0].producer_timestamp == pytest.approx(start / 1000)
    assert all(f.server_timestamp and f.millis_behind_now is not None for f in fragments)
    for got, sent in zip(fragments, source):
        assert [bytes(f.data) for f in got.frames] == [bytes(f.data) for f in sent.frames]
        assert [f.keyframe for f in got.frames] == [f.keyframe for f in sent.frames]
        assert got.tracks[0].codec_private == sent.tracks[0].codec_private
        assert (got.tracks[0].width, got.tracks[0].height) == (640, 480)

    after = media.get_media(StreamName="cam", StartSelector={
        "StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": str(numbers[4])})
    assert [f.fragment_number for f in iter_fragments(after["Payload"])] == numbers[5:]
    resumed = media.get_media(StreamName="cam", StartSelector={
        "StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": str(numbers[6])})
    assert [f.fragment_number for f in iter_fragments(resumed["Payload"])] == numbers[7:]
    by_producer = media.get_media(StreamName="cam", StartSelector={
        "StartSelectorType": "PRODUCER_TIMESTAMP",
        "StartTimestamp": start // 1000 + 5})  # botocore sends whole seconds: +4.001 to +5 s
    assert [f.fragment_number for f in iter_fragments(by_producer["Payload"])] == numbers[2:]
    first_server = fragments[3].server_timestamp
    by_server = media.get_media(StreamName="cam", StartSelector={
        "StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": first_server})
    assert [f.fragment_number for f in iter_fragments(by_server["Payload"])][0] <= numbers[3]

    listed = archive.list_fragments(StreamName="cam")["Fragments"]
    assert sorted(int(f["FragmentNumber"]) for f in listed) == numbers
    assert all(f["FragmentSizeInBytes"] > 100_000 for f in listed)
    window = archive.list_fragments(StreamName="cam", FragmentSelector={
        "FragmentSelectorType": "PRODUCER_TIMESTAMP",
        "TimestampRange": {"StartTimestamp": (start + 1000) / 1000,
                           "EndTimestamp": (start + 7000) / 1000}})["Fragments"]  # sent in whole seconds
    assert len(window) == 3  # fragments starting at +2 s, +4 s, +6 s
    chosen = [str(numbers[1]), str(numbers[5])]
    listed_media = archive.get_media_for_fragment_list(StreamName="cam", Fragments=chosen)
    got = list(iter_fragments(listed_media["Payload"]))
    assert [str(f.fragment_number) for f in got] == chosen
    assert [len(f.frames) for f in got] == [59, 59] and got[0].server_timestamp


def test_get_media_now_delivers_each_new_fragment_live(kvs, source):
    control, media, _ = clients(kvs)
    control.create_stream(StreamName="live")
    response = media.get_media(StreamName="live", StartSelector={"StartSelectorType": "NOW"})
    arrived: dict[int, float] = {}
    persisted: dict[int, float] = {}

    def read_media():
        for fragment in iter_fragments(response["Payload"]):
            arrived[fragment.fragment_number] = time.monotonic()

    # A camera's PutMedia over a raw socket: clusters sent 0.2 s apart, acks read as they come.
    camera = socket.create_connection(("127.0.0.1", kvs.port))
    camera.sendall(b"POST /putMedia HTTP/1.1\r\nHost: local\r\nx-amzn-stream-name: live\r\n"
                   b"x-amzn-fragment-timecode-type: ABSOLUTE\r\nTransfer-Encoding: chunked\r\n\r\n")

    def read_acks():
        for line in camera.makefile("rb"):
            if b'"PERSISTED"' in line:
                persisted[int(json.loads(line)["FragmentNumber"])] = time.monotonic()

    threads = [threading.Thread(target=read_media), threading.Thread(target=read_acks)]
    for thread in threads:
        thread.start()
    clusters = read_fragments(producer_mkv(source[:4], now_ms()))
    pieces = [writer.stream_header(clusters[0].tracks)]
    pieces += [writer.cluster(f.cluster_timecode, f.frames) for f in clusters]
    sent_at = []
    for piece in pieces:
        sent_at.append(time.monotonic())
        camera.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        time.sleep(0.2)
    camera.sendall(b"0\r\n\r\n")
    for thread in threads:
        thread.join(10)
    camera.close()
    assert sorted(arrived) == sorted(persisted) and len(arrived) == 4
    # A complete cluster is persisted at once, not when the camera's next cluster begins.
    for index, number in enumerate(sorted(persisted)[:-1]):
        assert persisted[number] < sent_at[index + 2], index
    delays = [arrived[n] - persisted[n] for n in persisted]
    # Pushed on persist, not polled: well under a polling interval even on a loaded machine.
    assert max(delays) < 0.25, delays


def test_bad_input_gets_aws_errors_and_other_streams_keep_working(kvs, source):
    control, media, _ = clients(kvs)
    for name in ("good", "bad"):
        control.create_stream(StreamName=name)

    status, headers, error = put_media(kvs.endpoint_url, "missing", b"\x1a\x45\xdf\xa3")
    assert status == 404 and headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert "missing" in error["message"]

    _, _, acks = put_media(kvs.endpoint_url, "bad", os.urandom(5000))
    assert acks[-1]["EventType"] == "ERROR" and acks[-1]["ErrorId"] == 4006
    assert acks[-1]["ErrorCode"] == "INVALID_MKV_DATA"

    truncated = producer_mkv(source[:2], now_ms())[:-1000]
    _, _, acks = put_media(kvs.endpoint_url, "bad", truncated)
    assert [a["EventType"] for a in acks if a["EventType"] != "IDLE"][-1] == "ERROR"
    assert acks[-1]["ErrorId"] == 4006
    assert sum(a["EventType"] == "PERSISTED" for a in acks) == 1  # the complete first fragment

    long_fragment = source[0].frames[0]
    start = now_ms() + 60_000
    body = writer.stream_header(source[0].tracks) + writer.cluster(start, [
        Frame(1, start, True, long_fragment.data), Frame(1, start + 11_000, False, b"\0" * 10)])
    _, _, acks = put_media(kvs.endpoint_url, "bad", body)
    assert [(a["EventType"], a.get("ErrorId")) for a in acks if a["EventType"] != "IDLE"][-1] \
        == ("ERROR", 4002)

    backwards = producer_mkv(source[2:3], now_ms() + 120_000) + \
        producer_mkv(source[3:4], now_ms() + 100_000)[len(writer.stream_header(source[0].tracks)):]
    _, _, acks = put_media(kvs.endpoint_url, "bad", backwards)
    kinds = [(a["EventType"], a.get("ErrorId")) for a in acks if a["EventType"] != "IDLE"]
    assert ("PERSISTED", None) in kinds and kinds[-1] == ("ERROR", 4004)

    huge = writer.stream_header(source[0].tracks) + writer.cluster(now_ms() + 200_000, [
        Frame(1, now_ms() + 200_000 + i, i == 0, b"\0" * (5 * 1024 * 1024)) for i in range(11)])
    _, _, acks = put_media(kvs.endpoint_url, "bad", huge, chunk=1024 * 1024)
    assert acks[-1]["EventType"] == "ERROR" and acks[-1]["ErrorId"] == 4001

    # the service still serves a healthy stream after all that
    _, _, acks = put_media(kvs.endpoint_url, "good", producer_mkv(source[:3], now_ms()))
    assert sum(a["EventType"] == "PERSISTED" for a in acks) == 3
    response = media.get_media(StreamName="good", StartSelector={"StartSelectorType": "EARLIEST"})
    assert [len(f.frames) for f in iter_fragments(response["Payload"])] == [59, 59, 59]
    with pytest.raises(ClientError) as err:
        media.get_media(StreamName="missing", StartSelector={"StartSelectorType": "EARLIEST"})
    assert error_code(err) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as err:
        media.get_media(StreamName="good", StartSelector={"StartSelectorType": "SOMETIME"})
    assert error_code(err) == "InvalidArgumentException"


def test_relative_timecodes_use_the_producer_start_timestamp(kvs, source):
    control, media, _ = clients(kvs)
    control.create_stream(StreamName="rel")
    body = producer_mkv(source[:2], 0)
    _, _, acks = put_media(kvs.endpoint_url, "rel", body, headers={
        "x-amzn-fragment-timecode-type": "RELATIVE",
        "x-amzn-producer-start-timestamp": "1700000000.5"})
    assert sum(a["EventType"] == "PERSISTED" for a in acks) == 2
    response = media.get_media(StreamName="rel", StartSelector={"StartSelectorType": "EARLIEST"})
    stamps = [f.producer_timestamp for f in iter_fragments(response["Payload"])]
    assert stamps == [pytest.approx(1700000000.5), pytest.approx(1700000000.5 + 1.999)]


def test_getmedia_limits(source):
    with LocalKvsService(limits=Limits(getmedia_idle_seconds=5)) as kvs:
        control, media, _ = clients(kvs)
        control.create_stream(StreamName="busy")
        open_responses = [media.get_media(StreamName="busy",
                                          StartSelector={"StartSelectorType": "NOW"})
                          for _ in range(3)]
        with pytest.raises(ClientError) as err:
            media.get_media(StreamName="busy", StartSelector={"StartSelectorType": "NOW"})
        assert error_code(err) == "ConnectionLimitExceededException"
        for response in open_responses:
            response["Payload"].close()
        time.sleep(1.1)
        control.create_stream(StreamName="hot")
        codes = []
        for _ in range(7):
            try:
                media.get_media(StreamName="hot",
                                StartSelector={"StartSelectorType": "EARLIEST"})["Payload"].close()
            except ClientError as exc:
                codes.append(exc.response["Error"]["Code"])
        assert "ClientLimitExceededException" in codes


def test_data_directory_survives_restart_and_retention_drops_old_fragments(tmp_path, source):
    with LocalKvsService(data_dir=tmp_path, retention_seconds=3600) as kvs:
        control, _, _ = clients(kvs)
        control.create_stream(StreamName="disk")
        put_media(kvs.endpoint_url, "disk", producer_mkv(source[:3], now_ms()))
    assert len(list((tmp_path / "disk").glob("*.mkv"))) == 3
    with LocalKvsService(data_dir=tmp_path, retention_seconds=3600,
                         limits=Limits(getmedia_idle_seconds=0.3)) as kvs:
        control, media, _ = clients(kvs)
        response = media.get_media(StreamName="disk",
                                   StartSelector={"StartSelectorType": "EARLIEST"})
        fragments = list(iter_fragments(response["Payload"]))
        assert [len(f.frames) for f in fragments] == [59, 59, 59]
        assert [bytes(f.data) for f in fragments[2].frames] == \
            [bytes(f.data) for f in source[2].frames]
        kvs.call(kvs.store.expire_all, int(time.time() * 1000) + 3600 * 1000 + 1)
        assert media.get_media(StreamName="disk", StartSelector={
            "StartSelectorType": "EARLIEST"})["Payload"].read() == b""
    assert list((tmp_path / "disk").glob("*.mkv")) == []


def test_deleting_a_stream_ends_its_putmedia_and_getmedia_sessions(kvs, source):
    control, media, _ = clients(kvs)
    arn = control.create_stream(StreamName="doomed")["StreamARN"]
    response = media.get_media(StreamName="doomed", StartSelector={"StartSelectorType": "NOW"})
    body = producer_mkv(source, now_ms())
    deleted = threading.Event()

    def slow_body():
        for index in range(0, len(body), 100_000):
            if index >= 400_000 and not deleted.is_set():
                control.delete_stream(StreamARN=arn)
                deleted.set()
            yield body[index:index + 100_000]
            time.sleep(0.02)

    result = {}
    reader = threading.Thread(target=lambda: result.update(
        fragments=list(iter_fragments(response["Payload"]))))
    reader.start()
    _, _, acks = put_media(kvs.endpoint_url, "doomed", slow_body())
    reader.join(10)
    assert not reader.is_alive()
    assert (acks[-1]["EventType"], acks[-1]["ErrorId"]) == ("ERROR", 4008)
    assert acks[-1]["ErrorCode"] == "STREAM_NOT_ACTIVE"
    persisted = [int(a["FragmentNumber"]) for a in acks if a["EventType"] == "PERSISTED"]
    assert [f.fragment_number for f in result["fragments"]] == persisted
