"""`python -m bench.gpu`: how many 1080p30 cameras one consumer process sustains on a GPU, with
YOLO detection + tracking on every frame and the video decoded by NVDEC, and where the time goes.

It is `python -m bench`'s harness (bench.scenario's probes on the local stack, bench.sweep's
search, bench.metrics' bounded rule) with this project's consumer only, configured for the GPU,
and the bench clip made a 1080p30 camera; beside each probe, the GPU's utilisation and memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS, GOP, KBITS = 1920, 1080, 30, 60, 4000  # 2 s fragments, as bench's clip
SMOKE_CLIP_SECONDS = 4

EPILOG = """\
what it does:
  1. prepares the camera clip once (bench/.cache/): the bench clip's source (vogels_330.mkv, a
     person on a stage) scaled 3x and letterboxed to 1920x1080, every frame kept (30 fps), a
     keyframe every 2 s, no B-frames, ~4 Mbit/s (libx264);
  2. starts the local stack, then probes as `python -m bench` does: N simulated cameras
     (producer_sim on this machine, real time) -> one `python -m consumer run` -> records read
     back from Kinesis; N doubles until the lag is not bounded, then bisects to one camera.
     The consumer: processing.processor yolo (detection), tracking on, sampling.mode all (every
     frame analysed), no JPEGs, processing.decode.device cuda (NVDEC; falls back to the CPU
     with a warning in the probe's consumer.log, which the report repeats), yolo.device
     --device, half precision on a GPU, frames of all cameras batched (--batch-size);
  3. samples the GPU's utilisation and memory once a second (NVML through pynvml, else
     `nvidia-smi -l 1`; "no GPU" when neither works) and keeps each probe's share;
  4. writes results.json and report.md to --out and prints the report: the largest N whose lag
     stayed bounded, per probe the GPU figures, and the consumer's stage times (decode,
     queue, batch, inference, record build with tracking, delivery) at that N.

bounded lag: bench's rule (bench.metrics): after a third of warm-up, >= 95 % of N x 30 x span
  records delivered within 3 fragments of capture, and the delay not growing by > 0.1 s per s.
  The cameras and the local stack share this machine: the report gives their CPU, so a run
  limited by them rather than by the consumer shows it.

on a GPU instance (an NVIDIA driver; reproducing the README's GPU figures):
  pip install -e '.[yolo]'          # Ultralytics; PyPI's torch for Linux is a CUDA build
  python -c "import torch; print(torch.cuda.is_available())"    # must print True
  python -c "import av; print(av.codec.hwaccel.hwdevices_available())"   # lists cuda
  mkdir -p ~/.cache/kvs-analytics/models && cp yolov8n.pt ~/.cache/kvs-analytics/models/
      (from https://github.com/ultralytics/assets/releases; or --weights yolov8n.yaml: random
      weights, the same compute, meaningless detections - the report says which was used)
  python -m bench.gpu --max-cameras 64 --budget 1800 --out bench/results/gpu-h200
  Expect a few minutes per doubling; outputs go to --out (default bench/results/gpu-<time>/).
  Compare decoders with --decode-device cpu; a TensorRT engine with --weights yolov8n.engine
  (`yolo export model=yolov8n.pt format=engine half=True dynamic=True batch=32`).

examples:
  python -m bench.gpu --smoke --device cpu --weights yolov8n.yaml --image-size 64   # CI
  python -m bench.gpu --device cpu --weights yolov8n.yaml --max-cameras 4   # no GPU here
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-cameras", type=int, default=32, metavar="N",
                        help="largest N tried (default 32)")
    parser.add_argument("--duration", type=float, default=30.0, metavar="SECONDS",
                        help="cameras stream this long per probe (default 30)")
    parser.add_argument("--budget", type=float, default=1500.0, metavar="SECONDS",
                        help="the whole run's time budget (default 1500)")
    parser.add_argument("--weights", default="yolov8n.pt",
                        help="YOLO weights: a .pt/.engine/.onnx in --models-dir, or an "
                             "architecture .yaml (random weights, same compute; default "
                             "yolov8n.pt)")
    parser.add_argument("--models-dir", type=Path,
                        default=Path("~/.cache/kvs-analytics/models").expanduser(),
                        help="folder holding the weights (default ~/.cache/kvs-analytics/models)")
    parser.add_argument("--image-size", type=int, default=640, help="YOLO input size (640)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="frames of all cameras per forward pass, at most (default 32)")
    parser.add_argument("--device", default="cuda:0",
                        help="YOLO's device: cuda:N (default cuda:0) or cpu")
    parser.add_argument("--decode-device", default=None,
                        help="processing.decode.device (default: cuda:N when --device is, "
                             "else cpu)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"one camera, a {SMOKE_CLIP_SECONDS} s clip, 6 s: checks that the "
                             "outputs are well formed, on any device")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (default: bench/results/gpu-<timestamp>)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.max_cameras, args.duration = 1, 6.0
    gpu = args.device.startswith("cuda")
    args.decode_device = args.decode_device or (args.device if gpu else "cpu")
    if args.max_cameras < 1 or args.duration < 5 or args.image_size < 32:
        parser.error("--max-cameras must be at least 1, --duration 5, --image-size 32")
    return args


def clip_path(seconds: int | None) -> Path:
    from bench.clip import CACHE, SOURCE
    tail = f"-{seconds}s" if seconds else ""
    return CACHE / f"{SOURCE.stem}-{WIDTH}x{HEIGHT}-{FPS}fps-gop{GOP}-{KBITS}k{tail}.mkv"


def prepare_clip(seconds: int | None = None) -> Path:
    """The cached 1080p30 clip (its first `seconds`, None: all), encoding it first if needed."""
    import av
    import numpy as np

    from bench.clip import SOURCE
    target = clip_path(seconds)
    if target.is_file():
        return target
    if not SOURCE.is_file():
        raise FileNotFoundError(f"clip source {SOURCE} not found (set KVS_SHARED_DIR)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.mkv")
    with av.open(str(SOURCE)) as reader, av.open(str(partial), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = KBITS * 1000
        stream.options = {"preset": "veryfast",
                          "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:"
                                         f"vbv-maxrate={KBITS * 5 // 4}:vbv-bufsize={KBITS * 2}"}
        for index, frame in enumerate(reader.decode(video=0)):
            if seconds and index >= seconds * FPS:
                break
            height = min(HEIGHT, round(frame.height * WIDTH / frame.width / 2) * 2)
            canvas = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)  # letterboxed, as bench's
            top = (HEIGHT - height) // 2
            canvas[top:top + height] = frame.to_ndarray(width=WIDTH, height=height,
                                                        format="rgb24")
            picture = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            picture.pts, picture.time_base = index, Fraction(1, FPS)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    partial.replace(target)
    return target


class GpuMonitor:
    """The GPU's utilisation (%) and memory used (MiB) once a second, from NVML, else from
    `nvidia-smi -l 1`; `name` is None and `reason` says why when neither works."""

    def __init__(self, index: int):
        self.index, self.samples, self.name, self.reason = index, [], None, None
        self.memory_total_mib: float | None = None
        self._stop = threading.Event()
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> GpuMonitor:
        try:
            import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self.name = pynvml.nvmlDeviceGetName(handle)
            self.memory_total_mib = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20
            self._thread = threading.Thread(target=self._nvml, args=(pynvml, handle), daemon=True)
        except Exception as err:  # noqa: BLE001 - ImportError, NVMLError: try nvidia-smi
            nvml = f"NVML: {type(err).__name__}: {err}"
            smi = shutil.which("nvidia-smi")
            if smi is None:
                self.reason = f"{nvml}; nvidia-smi: not found"
                return self
            query = [smi, "-i", str(self.index), "--format=csv,noheader,nounits"]
            try:
                line = subprocess.run(query + ["--query-gpu=name,memory.total"], check=True,
                                      capture_output=True, text=True, timeout=20).stdout
                self.name, total = (part.strip() for part in line.strip().rsplit(",", 1))
                self.memory_total_mib = float(total)
            except (subprocess.SubprocessError, OSError, ValueError) as smi_err:
                self.reason = f"{nvml}; nvidia-smi: {smi_err}"
                return self
            self._process = subprocess.Popen(
                query + ["--query-gpu=utilization.gpu,memory.used", "-l", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._smi, daemon=True)
        self._thread.start()
        return self

    def _nvml(self, pynvml, handle) -> None:
        while not self._stop.wait(1.0):
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            self.samples.append((time.time(), float(util), used))

    def _smi(self) -> None:
        for line in self._process.stdout:
            with contextlib.suppress(ValueError):
                util, used = (float(part) for part in line.split(","))
                self.samples.append((time.time(), util, used))

    def stop(self) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)

    def figures(self, since: float, until: float) -> dict | None:
        """Utilisation mean/max and memory max over [since, until]; None without a GPU."""
        if self.name is None:
            return None
        window = [s for s in self.samples if since <= s[0] <= until]
        if not window:
            return {"samples": 0}
        utils = [s[1] for s in window]
        return {"samples": len(window), "utilization_pct_mean": sum(utils) / len(utils),
                "utilization_pct_max": max(utils), "memory_used_mib_max": max(s[2] for s in window)}


def consumer_settings(args: argparse.Namespace) -> dict:
    """What this benchmark changes in bench.scenario's consumer configuration."""
    return {"defaults": {"sampling": {"mode": "all"}, "frames": "none"},
            "processing": {"processor": "yolo", "batch_size": args.batch_size,
                           "decode": {"device": args.decode_device},
                           "yolo": {"weights": args.weights, "models_dir": str(args.models_dir),
                                    "device": args.device, "image_size": args.image_size,
                                    "half": args.device != "cpu"}}}


def decode_fallback(log_path: Path) -> str | None:
    """The consumer's warning that decoding fell back to the CPU (consumer.pipeline.nvdec)."""
    if not log_path.is_file():
        return None
    return next((line.strip() for line in log_path.read_text(errors="replace").splitlines()
                 if "cannot be decoded on the GPU" in line), None)


def _ms(figures: dict | None, key: str) -> str:
    value = (figures or {}).get(key)
    return "-" if value is None else f"{value * 1000:,.1f}"


def markdown(results: dict) -> str:
    gpu, params, sweep = results["gpu"], results["parameters"], results["sweep"]
    weights = params["weights"] + (" (architecture only: random weights, the trained model's "
                                   "compute, meaningless detections)"
                                   if params["weights"].endswith((".yaml", ".yml")) else "")
    lines = ["# GPU benchmark: 1080p30 cameras, YOLO detection + tracking on every frame", "",
             f"- GPU: {gpu['name'] or 'no GPU'}" + (f", {gpu['memory_total_mib']:,.0f} MiB"
                                                   if gpu["name"] else f" ({gpu['reason']})"),
             f"- machine: {results['machine']['cpu_model']}, {results['machine']['cores']} cores",
             (f"- YOLO: {weights} on {params['device']}, half {params['device'] != 'cpu'}, "
             f"image size {params['image_size']}, batch size {params['batch_size']}"),
             f"- decode: processing.decode.device {params['decode_device']}"
             + "".join(f"; probe {p['cameras']}: FELL BACK TO THE CPU: {p['decode_fallback']}"
                       for p in sweep["probes"] if p.get("decode_fallback")),
             f"- capacity (largest N whose lag stayed bounded): **{sweep['capacity']}**"
             + (" (at --max-cameras)" if sweep["at_cap"] else "")
             + (f" (budget cut the search: {sweep['skipped']} skipped)" if sweep["skipped"]
                else ""), "",
             ("| N | bounded | analysed fps / target | latency p50 | consumer cores | cameras + "
             "stack cores | GPU util mean / max | GPU memory max |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in sweep["probes"]:
        g, cores = p.get("gpu") or {}, p.get("cores") or {}
        lat = (p.get("latency_s") or {}).get("p50")
        others = sum(cores.get(k) or 0 for k in ("cameras", "harness"))
        lines.append(
            f"| {p['cameras']} | {'yes' if p['bounded'] else 'no'} | {p['analysed_fps']:.1f} / "
            f"{p['analysed_fps_target']:g} | {'-' if lat is None else f'{lat:.2f} s'} | "
            f"{cores.get('consumer') or 0:.2f} | {others:.2f} | "
            + (f"{g['utilization_pct_mean']:.0f} % / {g['utilization_pct_max']:.0f} % | "
               f"{g['memory_used_mib_max']:,.0f} MiB |" if g.get("samples")
               else "no GPU | - |"))
    basis = results["stages_probe"]
    if basis is not None:
        stages = basis.get("stage_times") or {}
        lines += ["", (f"Stage times at N = {basis['cameras']} (ms; consumer.pipeline."
                       "stage_times; record_build is the post-processing: tracking, records):"),
                  "", "| stage | p50 | p90 | count | what it measures |",
                  "| --- | --- | --- | --- | --- |"]
        for name, what in results["definitions"]["stages"].items():
            if name in stages:
                figures = stages[name]
                lines.append(f"| {name} | {_ms(figures, 'p50')} | {_ms(figures, 'p90')} | "
                             f"{figures.get('count', 0):,} | {what} |")
    return "\n".join(lines) + "\n"


def _stages_probe(bounded: list[dict], judged: list[dict]) -> dict | None:
    """The stage times reported: the capacity probe's, else the smallest probe's."""
    chosen = (max(bounded, key=lambda p: p["cameras"]) if bounded
              else min(judged, key=lambda p: p["cameras"], default=None))
    return None if chosen is None else {"cameras": chosen["cameras"],
                                        "bounded": chosen["bounded"],
                                        "stage_times": chosen["stage_times"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    out = args.out or REPO / "bench" / "results" / f"gpu-{datetime.now():%Y%m%d-%H%M%S}"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:5.0f} s] {message}", flush=True)

    from bench.__main__ import _failed_probe
    from bench.metrics import summarise
    from bench.report import machine
    from bench.scenario import FRAGMENT_SECONDS, Environment, run_probe
    from bench.sweep import Runner
    from consumer.pipeline.stage_times import STAGES
    from infra.local.stack import LocalStack

    weights = Path(args.weights).expanduser()
    weights = weights if weights.parent != Path(".") else args.models_dir / weights
    if not args.weights.endswith((".yaml", ".yml")) and not weights.exists():
        print(f"bench.gpu: weights {weights} not found (--weights, --models-dir); an "
              "architecture such as yolov8n.yaml gives random weights offline", file=sys.stderr)
        return 2
    clip = prepare_clip(SMOKE_CLIP_SECONDS if args.smoke else None)
    log(f"clip {clip}")
    monitor = GpuMonitor(int(args.device.partition(":")[2] or 0)).start()
    log(f"GPU: {monitor.name or 'no GPU (' + str(monitor.reason) + ')'}")
    count = 0
    with LocalStack(retention_seconds=120) as stack:
        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)  # as bench: see its note
        env = Environment(stack, clip, args.models_dir, out / "probes",
                          ours_settings=consumer_settings(args))

        def probe(p) -> dict:
            nonlocal count
            count += 1
            try:
                raw = run_probe(env, p, count)
            except Exception as err:  # noqa: BLE001 - a failed probe is an unbounded one
                traceback.print_exc()
                return _failed_probe(p, f"{type(err).__name__}: {err}")
            summary = summarise(raw, FRAGMENT_SECONDS)
            summary["gpu"] = monitor.figures(raw["cameras_started"], raw["stopped"])
            summary["decode_fallback"] = decode_fallback(
                env.workdir / raw["name"] / "consumer.log")
            raw["arrivals"] = len(raw["arrivals"])  # counted: the records are many at 30 fps
            return summary | {"raw": raw}

        runner = Runner(probe, args.duration, args.max_cameras,
                        deadline=began + args.budget - 15, log=log)
        (sweep,) = [s.as_dict() for s in runner.run(["ours"], [float(FPS)])]
    monitor.stop()
    judged = [p for p in sweep["probes"] if "stage_times" in p]
    bounded = [p for p in judged if p["bounded"]]
    results = {
        "command": "python -m bench.gpu " + " ".join(sys.argv[1:] if argv is None else argv),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "gpu": {"name": monitor.name, "reason": monitor.reason, "index": monitor.index,
                "memory_total_mib": monitor.memory_total_mib},
        "clip": {"path": str(clip), "width": WIDTH, "height": HEIGHT, "fps": FPS, "gop": GOP,
                 "kbit_per_s_target": KBITS},
        "consumer_settings": consumer_settings(args), "sweep": sweep,
        "stages_probe": _stages_probe(bounded, judged),
        "definitions": {"stages": STAGES, "bounded": sys.modules["bench.metrics"].__doc__},
        "total_seconds": time.monotonic() - began,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "report.md").write_text(markdown(results))
    print()
    print(markdown(results))
    print(f"outputs: {out / 'results.json'}, {out / 'report.md'}")
    print(f"total time: {time.monotonic() - began:.0f} s ({count} probes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
