"""`python -m bench.fuzz --minutes N`: the fragment reader against mutations of real captures.

Each input is one of the real GetMedia captures in ../shared/kvs-captures, mutated a few times
(bytes flipped, runs overwritten, inserted, deleted or repeated, the end cut off), read whole
(`read_fragments`, with and without `resync`) and fed in small chunks. The contract checked: only
the reader's documented errors (`MkvError`: `InvalidMkvError`, `TruncatedMkvError`) may escape,
and no input under 1 MB may take over 2 s. An input that breaks it is written to --out and the
run exits 1; the CI test (tests/test_reader_fuzz.py) runs the same check for a few seconds with
hypothesis choosing the seeds.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from pathlib import Path

from consumer.wire import FragmentReader, MkvError, read_fragments

REPO = Path(__file__).resolve().parents[1]
CAPTURES = Path(os.environ.get("KVS_SHARED_DIR", REPO.parent / "shared")) / "kvs-captures"
SLOW_SECONDS = 2.0
SMALL_BYTES = 1 << 20


def captures(folder: Path = CAPTURES) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.mkv"))}


def mutate(data: bytes, rng: random.Random, rounds: int | None = None) -> bytes:
    """`data` changed in 1-8 places, the ways a network, a disk or a bad producer would."""
    out = bytearray(data)
    for _ in range(rounds or rng.randint(1, 8)):
        if not out:
            break
        at = rng.randrange(len(out))
        kind = rng.randrange(6)
        if kind == 0:  # flip bits of one byte
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1:  # overwrite a run with random or extreme bytes
            run = rng.randint(1, 16)
            fill = rng.choice([bytes([rng.randrange(256) for _ in range(run)]), b"\xff" * run,
                               b"\x00" * run, b"\x01" + b"\xff" * (run - 1)])
            out[at:at + run] = fill
        elif kind == 2:  # insert bytes
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif kind == 3:  # delete a run
            del out[at:at + rng.randint(1, 4096)]
        elif kind == 4:  # repeat a run (a retransmitted chunk)
            run = bytes(out[at:at + rng.randint(1, 4096)])
            out[at:at] = run
        else:  # cut the end (a dropped connection)
            del out[at:]
    return bytes(out)


def check(data: bytes) -> None:
    """Raise AssertionError if the reader breaks its contract on `data` (module doc)."""
    started = time.monotonic()
    for resync in (False, True):
        try:
            read_fragments(data, resync=resync)
        except MkvError:
            pass
    reader = FragmentReader()
    try:
        for start in range(0, len(data), 977):  # odd chunks split elements anywhere
            list(reader.feed(data[start:start + 977]))
        list(reader.close())
    except MkvError:
        pass
    took = time.monotonic() - started
    if len(data) < SMALL_BYTES and took > SLOW_SECONDS:
        raise AssertionError(f"{len(data)} bytes took {took:.2f} s (limit {SLOW_SECONDS} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help="how long (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"),
                        help="where inputs that break the contract are written")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # resync's notes about skipped bytes, once per input
    sources = captures()
    if not sources:
        print(f"no captures in {CAPTURES} (set KVS_SHARED_DIR)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    deadline = time.monotonic() + args.minutes * 60
    names = sorted(sources)
    inputs = failures = 0
    slowest = 0.0
    print(f"fuzzing the fragment reader with {len(names)} captures from seed {seed} for "
          f"{args.minutes:g} min")
    while time.monotonic() < deadline:
        rng = random.Random(seed + inputs)
        name = rng.choice(names)
        data = mutate(sources[name], rng)
        started = time.monotonic()
        try:
            check(data)
        except Exception as err:  # noqa: BLE001 - any escape is a finding
            failures += 1
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / f"{name}.seed{seed + inputs}.mkv"
            path.write_bytes(data)
            print(f"FOUND {type(err).__name__}: {err} (input written to {path})")
        slowest = max(slowest, time.monotonic() - started)
        inputs += 1
        if inputs % 1000 == 0:
            print(f"  {inputs} inputs, {failures} findings, slowest {slowest:.3f} s")
    print(f"{inputs} inputs in {args.minutes:g} min, {failures} findings, slowest input "
          f"{slowest:.3f} s (seed {seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
