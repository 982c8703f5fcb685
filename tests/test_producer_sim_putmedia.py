"""The PutMedia client: request head and SigV4, chunked body, ack parsing, AWS error mapping."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import pytest
from botocore.credentials import Credentials

from consumer.media.fragmenter import encode_cluster, fragment_packets
from consumer.media.sources import TestPatternSource
from consumer.wire import writer
from producer_sim.acks import Ack, AckParser, ErrorAction, ack_error_action
from producer_sim.putmedia import (
    PutMediaConnection,
    PutMediaConnectionError,
    PutMediaHttpError,
    http_error,
)

from .putmedia_fake import FakePutMedia, Script

CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


@pytest.fixture(scope="module")
def media():
    source = TestPatternSource(64, 48, fps=10, frames=30, epoch_ms=0)
    fragments = fragment_packets(source, None, 1000, 1_700_000_000_000)
    return source.track, fragments


def connection(url, **kwargs):
    return PutMediaConnection(url, region="us-east-1", credentials=CREDENTIALS,
                              stream_name="cam-1", **kwargs)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


# --- acks ------------------------------------------------------------------------------------

def test_ack_lines_split_anywhere():
    lines = (b'{"EventType":"BUFFERING","FragmentTimecode":1700000000000,"FragmentNumber":'
             b'"91343852333181432392682062600000000000000000000"}\n'
             b'{"EventType":"PERSISTED","FragmentTimecode":1700000000000,"FragmentNumber":"9"}\n'
             b'{"EventType":"IDLE"}\n')
    for cut in range(1, len(lines)):
        parser = AckParser()
        acks = parser.feed(lines[:cut]) + parser.feed(lines[cut:]) + parser.feed(b"", final=True)
        assert [a.event_type for a in acks] == ["BUFFERING", "PERSISTED", "IDLE"]
    assert acks[0].fragment_number == "91343852333181432392682062600000000000000000000"
    assert acks[0].fragment_timecode == 1_700_000_000_000


def test_ack_parser_tolerates_missing_newlines_and_garbage(caplog):
    parser = AckParser()
    acks = parser.feed(b'{"EventType":"RECEIVED","FragmentTimecode":5}{"EventType":"PERSISTED",'
                       b'"FragmentTimecode":5}\r\nnot json\n\n{"EventType":"ERROR",'
                       b'"FragmentTimecode":7,"ErrorId":4002,"ErrorCode":"MAX_FRAGMENT_DURATION'
                       b'_REACHED"}\n{"EventType":')
    assert [(a.event_type, a.fragment_timecode) for a in acks] == \
        [("RECEIVED", 5), ("PERSISTED", 5), ("ERROR", 7)]
    assert acks[2].error_id == 4002 and acks[2].action == ErrorAction.SKIP
    assert "not json" in caplog.text
    assert parser.feed(b"", final=True) == []  # the cut-off object is reported, not returned
    assert "malformed" in caplog.text


@pytest.mark.parametrize("error_id,action", [
    (4000, ErrorAction.RETRY), (4001, ErrorAction.SKIP), (4002, ErrorAction.SKIP),
    (4003, ErrorAction.RETRY), (4004, ErrorAction.SKIP), (4006, ErrorAction.SKIP),
    (4007, ErrorAction.SKIP), (4008, ErrorAction.RETRY), (4500, ErrorAction.FATAL),
    (4599, ErrorAction.FATAL), (4321, ErrorAction.SKIP), (5000, ErrorAction.RETRY),
    (5999, ErrorAction.RETRY), (None, ErrorAction.RETRY),
])
def test_every_ack_error_has_an_explicit_action(error_id, action):
    assert ack_error_action(error_id) == action


def test_ack_description_names_the_error():
    ack = Ack.from_json({"EventType": "ERROR", "FragmentTimecode": 12, "ErrorId": "4004"})
    assert ack.describe() == \
        "PutMedia error 4004 FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS for fragment 12"


@pytest.mark.parametrize("status,error_type,retryable", [
    (404, "ResourceNotFoundException", False),
    (400, "InvalidArgumentException", False),
    (403, "AccessDeniedException", False),
    (400, "ConnectionLimitExceededException", True),
    (400, "ClientLimitExceededException", True),
    (500, None, True),
    (503, "ServiceUnavailableException", True),
    (429, None, True),
    (400, None, False),
])
def test_http_errors_are_classified(status, error_type, retryable):
    headers = {"x-amzn-errortype": f"{error_type}:http://internal.amazon.com/"} if error_type \
        else {}
    err = http_error(status, headers, b'{"message": "Stream cam-9 is not found."}')
    assert err.retryable is retryable
    assert err.error_type == error_type
    assert "Stream cam-9 is not found." in str(err) and str(status) in str(err)


# --- the connection ------------------------------------------------------------------------

def sigv4_check(headers: dict[str, str], secret: str) -> bool:
    """Recompute the SigV4 signature from what arrived on the wire (independent of botocore)."""
    auth = headers["authorization"]
    algorithm, _, rest = auth.partition(" ")
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    credential = fields["Credential"].split("/")
    date, region, service = credential[1], credential[2], credential[3]
    signed = fields["SignedHeaders"].split(";")
    canonical = "\n".join([
        "POST", "/putMedia", "",
        "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed),
        ";".join(signed), headers["x-amz-content-sha256"]])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([algorithm, headers["x-amz-date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest() == fields["Signature"]


def test_request_is_signed_chunked_and_acknowledged(media):
    track, fragments = media

    async def scenario():
        async with FakePutMedia() as fake:
            conn = connection(fake.url)
            await conn.open()
            header = writer.stream_header([track])
            await conn.send(header)
            for fragment in fragments:
                await conn.send(encode_cluster(fragment))
            await conn.finish()
            acks = []
            while (ack := await conn.next_ack(timeout=5)) is not None:
                acks.append(ack)
            await conn.close()
            return fake, acks, header

    fake, acks, header = run(scenario())
    [request] = fake.connections
    headers = request.headers
    assert headers["x-amzn-stream-name"] == "cam-1"
    assert headers["x-amzn-fragment-timecode-type"] == "ABSOLUTE"
    assert headers["x-amzn-fragment-acknowledgment-required"] == "1"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert headers["host"] == fake.url.removeprefix("http://")
    assert headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/kinesisvideo/aws4_request" in headers["authorization"]
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amzn-stream-name", "x-amzn-fragment-timecode-type",
            "x-amz-content-sha256", "x-amz-date"} <= set(signed)
    assert "transfer-encoding" not in signed
    assert sigv4_check(headers, CREDENTIALS.secret_key)
    # One HTTP chunk per send: the header, then one per cluster.
    assert request.chunk_sizes == [len(header)] + [len(encode_cluster(f)) for f in fragments]
    assert [f.cluster_timecode for f in request.fragments] == \
        [f.cluster_timecode for f in fragments]
    events = [(a.event_type, a.fragment_timecode) for a in acks]
    for fragment in fragments:
        tc = fragment.cluster_timecode
        assert events.index(("BUFFERING", tc)) < events.index(("RECEIVED", tc)) \
            < events.index(("PERSISTED", tc))


def test_relative_timecodes_and_stream_arn():
    conn = PutMediaConnection("https://kvs.example.com/", region="eu-west-1",
                              credentials=Credentials("A", "B", "TOKEN"),
                              stream_arn="arn:aws:kinesisvideo:eu-west-1:1:stream/x/1",
                              timecode_type="RELATIVE", producer_start_timestamp=1700000000.25)
    headers = conn.request_headers()
    assert headers["Host"] == "kvs.example.com" and conn.port == 443 and conn.secure
    assert headers["x-amzn-stream-arn"].endswith("stream/x/1")
    assert "x-amzn-stream-name" not in headers
    assert headers["x-amzn-producer-start-timestamp"] == "1700000000.250"
    assert headers["X-Amz-Security-Token"] == "TOKEN"
    assert conn.request_head().startswith(b"POST /putMedia HTTP/1.1\r\n")
    with pytest.raises(ValueError, match="producer_start_timestamp"):
        PutMediaConnection("http://h", region="r", credentials=CREDENTIALS, stream_name="s",
                           timecode_type="RELATIVE")
    with pytest.raises(ValueError, match="bad PutMedia endpoint"):
        PutMediaConnection("kvs.example.com", region="r", credentials=CREDENTIALS,
                           stream_name="s")


def test_refusal_carries_the_aws_error(media):
    track, _ = media

    async def scenario():
        script = Script(refuse=(404, "ResourceNotFoundException", "Stream cam-1 not found"))
        async with FakePutMedia([script]) as fake:
            conn = connection(fake.url)
            await conn.open()
            with pytest.raises(PutMediaHttpError) as err:
                await conn.send(writer.stream_header([track]))
                await conn.next_ack(timeout=5)
            await conn.close()
            return err.value

    err = run(scenario())
    assert (err.status, err.error_type, err.retryable) == (404, "ResourceNotFoundException", False)
    assert "Stream cam-1 not found" in str(err)


def test_reset_mid_stream_is_a_retryable_connection_error(media):
    track, fragments = media

    async def scenario():
        async with FakePutMedia([Script(drop_after=1)]) as fake:
            conn = connection(fake.url)
            await conn.open()
            await conn.send(writer.stream_header([track]))
            acks = []
            with pytest.raises(PutMediaConnectionError) as err:
                for fragment in fragments:
                    await conn.send(encode_cluster(fragment))
                    await asyncio.sleep(0.05)
                while (ack := await conn.next_ack(timeout=5)) is not None:
                    acks.append(ack)
            await conn.close()
            return err.value

    assert run(scenario()).retryable


def test_nothing_listening():
    async def scenario():
        conn = connection("http://127.0.0.1:1")
        with pytest.raises(PutMediaConnectionError, match="cannot connect to http://127.0.0.1:1"):
            await conn.open()

    run(scenario())
