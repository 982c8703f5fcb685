"""How much CPU the local KVS service needs to serve N live cameras (PutMedia in, GetMedia out).

    python -m bench.local_kvs_load [--cameras 50] [--mbps 2] [--seconds 20]

The service runs in its own process (python -m infra.local), so its CPU time is read from /proc
apart from the load generator's. Each camera sends 15 fps in unknown-size 2 s clusters, paced in
real time; each stream has one GetMedia reader started at NOW, as a consumer would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from urllib.parse import urlparse

import boto3

from consumer.wire import writer
from consumer.wire.model import Track
from infra.local.stack import LOCAL_CREDENTIALS

FPS = 15
FRAGMENT_SECONDS = 2
TRACK = Track(number=1, type=1, codec_id="V_MPEG4/ISO/AVC", codec_private=b"\x01" * 40,
              width=1280, height=720)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def camera(host: str, port: int, stream: str, mbps: float, seconds: float,
                 sent: dict) -> None:
    reader, writer_ = await asyncio.open_connection(host, port)
    writer_.write(f"POST /putMedia HTTP/1.1\r\nHost: {host}\r\nx-amzn-stream-name: {stream}\r\n"
                  "x-amzn-fragment-timecode-type: ABSOLUTE\r\nTransfer-Encoding: chunked\r\n\r\n"
                  .encode())
    acks = asyncio.create_task(reader.read(-1))
    frame_bytes = int(mbps * 1e6 / 8 / FPS)
    payload = os.urandom(frame_bytes)

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n" % len(data) + data + b"\r\n"

    writer_.write(chunk(writer.stream_header([TRACK])))
    start = time.monotonic()
    start_ms = int(time.time() * 1000)
    frame = 0
    while time.monotonic() - start < seconds:
        tc = start_ms + frame * 1000 // FPS
        data = b""
        if frame % (FPS * FRAGMENT_SECONDS) == 0:
            cluster_tc = tc
            data += writer.cluster_start(cluster_tc)
        data += writer.simple_block(1, tc - cluster_tc, frame % FPS == 0, payload)
        writer_.write(chunk(data))
        sent[stream] = sent.get(stream, 0) + len(data)
        frame += 1
        await asyncio.sleep(max(0.0, start + frame / FPS - time.monotonic()))
    writer_.write(b"0\r\n\r\n")
    await writer_.drain()
    body = await acks
    writer_.close()
    sent[stream + ":persisted"] = body.count(b'"PERSISTED"')


async def get_media(host: str, port: int, stream: str, received: dict) -> None:
    reader, writer_ = await asyncio.open_connection(host, port)
    body = json.dumps({"StreamName": stream, "StartSelector": {"StartSelectorType": "NOW"}})
    writer_.write(f"POST /getMedia HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    while data := await reader.read(1 << 20):
        received[stream] = received.get(stream, 0) + len(data)
    writer_.close()


async def load(url: str, cameras: int, mbps: float, seconds: float) -> tuple[dict, dict]:
    host, port = urlparse(url).hostname, urlparse(url).port
    sent: dict = {}
    received: dict = {}
    readers = [asyncio.create_task(get_media(host, port, f"cam-{i}", received))
               for i in range(cameras)]
    await asyncio.sleep(0.5)
    await asyncio.gather(*(camera(host, port, f"cam-{i}", mbps, seconds, sent)
                           for i in range(cameras)))
    await asyncio.sleep(0.5)
    for task in readers:
        task.cancel()
    return sent, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--mbps", type=float, default=2.0, help="bitrate per camera, Mbit/s")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    service = subprocess.Popen([sys.executable, "-m", "infra.local", "--retention", "60"],
                               stdout=subprocess.PIPE, text=True)
    try:
        endpoints = json.loads(service.stdout.readline())
        control = boto3.client("kinesisvideo", endpoint_url=endpoints["kinesisvideo"],
                               region_name=endpoints["region"], **LOCAL_CREDENTIALS)
        for i in range(args.cameras):
            control.create_stream(StreamName=f"cam-{i}")
        cpu_before, wall_before = cpu_seconds(service.pid), time.monotonic()
        sent, received = asyncio.run(load(endpoints["kinesisvideo"], args.cameras, args.mbps,
                                          args.seconds))
        cpu = cpu_seconds(service.pid) - cpu_before
        wall = time.monotonic() - wall_before
    finally:
        service.terminate()
        service.wait(10)
    sent_bytes = sum(v for k, v in sent.items() if not k.endswith(":persisted"))
    persisted = sum(v for k, v in sent.items() if k.endswith(":persisted"))
    expected = args.cameras * int(args.seconds // FRAGMENT_SECONDS)
    print(f"cameras {args.cameras} x {args.mbps} Mbit/s for {args.seconds:.0f} s "
          f"(PutMedia in, one GetMedia reader per stream out)")
    print(f"ingested        {sent_bytes / wall / 1e6:8.2f} MB/s  "
          f"({persisted} fragments persisted, {expected} expected)")
    print(f"served          {sum(received.values()) / wall / 1e6:8.2f} MB/s to GetMedia readers")
    print(f"service CPU     {cpu / wall * 100:8.1f} % of one core "
          f"({cpu / wall * 100 / args.cameras:.2f} % per camera)")
    print(f"left for the consumer on this {os.cpu_count()}-core machine: "
          f"{os.cpu_count() - cpu / wall:.2f} cores")


if __name__ == "__main__":
    main()
