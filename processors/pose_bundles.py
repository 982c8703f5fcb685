"""Build MediaPipe pose landmarker bundles (lite, heavy; full too) on a machine without internet.

    python -m processors.pose_bundles --out ~/.cache/kvs-analytics/models [--npm-tarball FILE]

Google publishes `pose_landmarker_{lite,full,heavy}.task`, and `processors.models` downloads them
on first use wherever the internet is reachable. Where it is not (only package registries are),
this tool builds equivalent bundles from parts the registries carry. A bundle is an uncompressed
ZIP of two TFLite models:

  pose_detector.tflite            the person detector (224x224), the same in the three variants:
                                  copied unchanged from an existing full bundle (`--detector
                                  pose_landmarker_full.task`), or taken from a mediapipe 0.10.x
                                  wheel (`--detector mediapipe-0.10.21-....whl`, or its
                                  `pose_detection.tflite`) and given metadata;
  pose_landmarks_detector.tflite  `pose_landmark_{variant}.tflite` (256x256, 33 landmarks) from the
                                  npm package @mediapipe/pose (Apache-2.0), given metadata;
                                  fetched with `npm pack` into a temporary folder unless
                                  `--npm-tarball` names the .tgz already fetched.

Metadata: what the Tasks graphs read from a model is its input normalisation, (x - mean) / std:
mean = std = 127.5 for the detector (input in [-1, 1]), mean 0 and std 255 for the landmark model
([0, 1]), the values of the legacy graphs; plus one feature entry per output tensor (2 for the
detector, 5 for each landmark model: landmarks, pose flag, segmentation, heatmap, world
landmarks). It is written with the installed mediapipe's flatbuffer schema exactly as mediapipe
0.10.21's MetadataWriter writes it (the recipe of ../shared/models/build_pose_task.py): the npm
package's full model comes out byte for byte as in ../shared/models/pose_landmarker_full.task.

Output: each entry stored on a 64-byte boundary (the runtime maps the model in place) with a
fixed timestamp, so the same inputs give the same bytes; written to a temporary file beside the
target, fsynced and renamed, so an interrupted build never leaves a half bundle under the real
name. Each bundle is then loaded once in `vision.PoseLandmarker` (skip with `--no-check`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

VARIANTS = ("lite", "full", "heavy")
NPM_PACKAGE = "@mediapipe/pose@0.5.1675469404"
# sha256 of the landmark models in NPM_PACKAGE: any other tarball is checked for shape only
NPM_SHA256 = {
    "lite": "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61",
    "full": "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    "heavy": "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe",
}
DEFAULT_MODELS_DIR = Path("~/.cache/kvs-analytics/models")  # processors.settings.Pose's default
DETECTOR, LANDMARKS = "pose_detector.tflite", "pose_landmarks_detector.tflite"
WHEEL_DETECTOR = "mediapipe/modules/pose_detection/pose_detection.tflite"
DESCRIPTION = "legacy mediapipe 0.10.21 model + metadata"  # as build_pose_task.py writes it
METADATA_NAME, METADATA_ID, TFLITE_ID = "TFLITE_METADATA", b"M001", b"TFL3"
MIN_PARSER_VERSION = "1.0.0"  # what mediapipe's parser-version check gives for this metadata
ALIGN = 64
ZIP_TIME = (2024, 1, 1, 0, 0, 0)


class BundleError(RuntimeError):
    """An input is missing or is not what a pose bundle needs; the message says what to do."""


@dataclass(frozen=True)
class Part:
    """A model of the bundle: its normalisation (mean, std), input side and output count."""

    name: str
    mean: float
    std: float
    size: int
    outputs: int


DETECTOR_PART = Part("pose_detector", 127.5, 127.5, 224, 2)
LANDMARKS_PART = Part("pose_landmarks_detector", 0.0, 255.0, 256, 5)


def bundle_name(variant: str) -> str:
    return f"pose_landmarker_{variant}.task"


# --- TFLite metadata -------------------------------------------------------------------------

def _schemas():
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated as meta
        from mediapipe.tasks.metadata import schema_py_generated as schema
    except ImportError as err:  # pragma: no cover - mediapipe is a dependency of the project
        raise BundleError(f"mediapipe's TFLite schema is not importable ({err}): "
                          "pip install mediapipe") from err
    return meta, schema


def _check_shape(model: bytes, part: Part, what: str) -> None:
    """Raise BundleError unless `model` is a TFLite model with the input and outputs of `part`."""
    _, schema = _schemas()
    if model[4:8] != TFLITE_ID:
        raise BundleError(f"{what} is not a TFLite model")
    graph = schema.Model.GetRootAsModel(model, 0).Subgraphs(0)
    shape = graph.Tensors(graph.Inputs(0)).ShapeAsNumpy().tolist()
    if graph.InputsLength() != 1 or shape != [1, part.size, part.size, 3] \
            or graph.OutputsLength() != part.outputs:
        raise BundleError(f"{what} is not a {part.name} model: expected one {part.size}x{part.size}"
                          f" RGB input and {part.outputs} outputs, got inputs of shape {shape} "
                          f"(x{graph.InputsLength()}) and {graph.OutputsLength()} outputs")


def with_metadata(model: bytes, part: Part) -> bytes:
    """`model` with TFLite metadata for `part` (replacing any it had), as mediapipe 0.10.21's
    MetadataWriter + MetadataPopulator write it: general info, an RGB image input normalised by
    (mean, std) with its value range, one feature output per output tensor."""
    import flatbuffers

    meta, schema = _schemas()
    _check_shape(model, part, part.name)
    image = meta.TensorMetadataT()
    image.name, image.description = "image", "Input image to be processed."
    image.stats = meta.StatsT()
    image.stats.max = [(255.0 - part.mean) / part.std] * 3
    image.stats.min = [(0.0 - part.mean) / part.std] * 3
    image.content = meta.ContentT()
    image.content.contentProperties = meta.ImagePropertiesT()
    image.content.contentProperties.colorSpace = meta.ColorSpaceType.RGB
    image.content.contentPropertiesType = meta.ContentProperties.ImageProperties
    norm = meta.ProcessUnitT()
    norm.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    norm.options = meta.NormalizationOptionsT()
    norm.options.mean, norm.options.std = [part.mean] * 3, [part.std] * 3
    image.processUnits = [norm]
    outputs = []
    for i in range(part.outputs):
        out = meta.TensorMetadataT()
        out.name, out.stats, out.content = f"out{i}", meta.StatsT(), meta.ContentT()
        out.content.contentProperties = meta.FeaturePropertiesT()
        out.content.contentPropertiesType = meta.ContentProperties.FeatureProperties
        outputs.append(out)
    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [image], outputs
    info = meta.ModelMetadataT()
    info.name, info.description = part.name, DESCRIPTION
    info.subgraphMetadata, info.minParserVersion = [subgraph], MIN_PARSER_VERSION
    builder = flatbuffers.Builder(0)
    builder.Finish(info.Pack(builder), METADATA_ID)
    metadata = bytes(builder.Output())

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    buffer = schema.BufferT()
    buffer.data = metadata
    tree.metadata = tree.metadata or []
    tree.buffers = tree.buffers or []
    for entry in tree.metadata:
        if entry.name.decode() == METADATA_NAME:
            tree.buffers[entry.buffer] = buffer
            break
    else:
        tree.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(tree.buffers) - 1
        tree.metadata.append(entry)
    builder = flatbuffers.Builder(0)
    builder.Finish(tree.Pack(builder), TFLITE_ID)
    return bytes(builder.Output())


def normalisation(model: bytes) -> tuple[list[float], list[float]] | None:
    """(mean, std) of the model's input according to its metadata; None without metadata."""
    meta, schema = _schemas()
    tree = schema.Model.GetRootAsModel(model, 0)
    for i in range(tree.MetadataLength()):
        if tree.Metadata(i).Name().decode() == METADATA_NAME:
            data = tree.Buffers(tree.Metadata(i).Buffer()).DataAsNumpy().tobytes()
            tensor = meta.ModelMetadata.GetRootAsModelMetadata(data, 0) \
                .SubgraphMetadata(0).InputTensorMetadata(0)
            for j in range(tensor.ProcessUnitsLength()):
                unit = tensor.ProcessUnits(j)
                if unit.OptionsType() == meta.ProcessUnitOptions.NormalizationOptions:
                    options = meta.NormalizationOptions()
                    options.Init(unit.Options().Bytes, unit.Options().Pos)
                    return options.MeanAsNumpy().tolist(), options.StdAsNumpy().tolist()
    return None


# --- inputs ----------------------------------------------------------------------------------

def detector_from(source: Path) -> tuple[bytes, str]:
    """The detector with metadata, and where it came from: a .task bundle's own entry (kept
    as it is when its normalisation is right), a mediapipe wheel's or a bare .tflite (given
    metadata)."""
    if not source.is_file():
        raise BundleError(f"detector source {source} does not exist")
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
            if DETECTOR in names:
                model, how = archive.read(DETECTOR), f"{DETECTOR} of {source}"
            elif WHEEL_DETECTOR in names:
                model, how = archive.read(WHEEL_DETECTOR), f"{WHEEL_DETECTOR} of {source}"
            else:
                raise BundleError(f"{source} holds neither {DETECTOR} (a pose bundle) nor "
                                  f"{WHEEL_DETECTOR} (a mediapipe 0.10.x wheel)")
    else:
        model, how = source.read_bytes(), str(source)
    _check_shape(model, DETECTOR_PART, how)
    wanted = ([DETECTOR_PART.mean] * 3, [DETECTOR_PART.std] * 3)
    if normalisation(model) == wanted and how.startswith(DETECTOR):
        return model, how
    return with_metadata(model, DETECTOR_PART), how + " + metadata"


def default_detector(out: Path) -> Path:
    """The first of: a full bundle in `out`, one in the default models folder, the installed
    mediapipe's own detector (0.10.x wheels ship it). BundleError when there is none."""
    candidates = [out / bundle_name("full"), DEFAULT_MODELS_DIR.expanduser() / bundle_name("full")]
    try:
        import mediapipe
        candidates.append(Path(mediapipe.__file__).parent / "modules" / "pose_detection"
                          / "pose_detection.tflite")
    except ImportError:  # pragma: no cover
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise BundleError(
        "no pose detector found (looked for " + ", ".join(map(str, candidates)) + "). Pass "
        "--detector with a pose_landmarker_full.task (e.g. ../shared/models), a mediapipe 0.10.x "
        "wheel (pip download mediapipe==0.10.21 --no-deps -d DIR) or its pose_detection.tflite")


def npm_pack(folder: Path, package: str = NPM_PACKAGE) -> Path:
    """`npm pack package` into `folder`; the .tgz's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise BundleError(f"npm is not installed: install Node.js, or fetch {package} elsewhere "
                          "(npm pack) and pass the .tgz with --npm-tarball")
    run = subprocess.run([npm, "pack", package, "--silent"], cwd=folder, check=False,
                         capture_output=True, text=True, timeout=600)
    tarballs = sorted(folder.glob("*.tgz"))
    if run.returncode != 0 or len(tarballs) != 1:
        raise BundleError(f"npm pack {package} failed (exit {run.returncode}): "
                          f"{(run.stderr or run.stdout).strip()[-500:]}")
    return tarballs[0]


def landmark_model(tarball: Path, variant: str) -> tuple[bytes, bool]:
    """`pose_landmark_{variant}.tflite` from the npm tarball, and whether its sha256 is the one of
    the pinned release (another release is only checked for the model's shape)."""
    member = f"package/pose_landmark_{variant}.tflite"
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            handle = archive.extractfile(member)  # read by name: nothing is written to disk
            if handle is None:
                raise KeyError(member)
            model = handle.read()
    except KeyError:
        raise BundleError(f"{tarball} has no {member}: is it the @mediapipe/pose package?") \
            from None
    except (OSError, tarfile.TarError) as err:
        raise BundleError(f"cannot read {tarball}: {err}") from err
    _check_shape(model, LANDMARKS_PART, f"{member} of {tarball}")
    return model, hashlib.sha256(model).hexdigest() == NPM_SHA256.get(variant)


# --- output ----------------------------------------------------------------------------------

def bundle_bytes(detector: bytes, landmarks: bytes) -> bytes:
    """The .task ZIP: stored entries on ALIGN-byte boundaries, fixed timestamps."""
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, model in ((DETECTOR, detector), (LANDMARKS, landmarks)):
            # padding in a zipalign-style extra field (id 0xD935), as build_hand_face_tasks.py
            pad = -(archive.fp.tell() + 30 + len(name.encode()) + 4) % ALIGN
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # the same header on every platform
            info.external_attr = 0o644 << 16
            info.extra = struct.pack("<HH", 0xD935, pad) + b"\0" * pad
            archive.writestr(info, model)
    return data.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def check_loads(path: Path) -> None:
    """Load the bundle in vision.PoseLandmarker and run it once on a blank image."""
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.PoseLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                           running_mode=vision.RunningMode.IMAGE)
    with vision.PoseLandmarker.create_from_options(options) as landmarker:
        blank = mp.Image(image_format=mp.ImageFormat.SRGB,
                         data=np.zeros((256, 256, 3), dtype=np.uint8))
        landmarker.detect(blank)


def build(out: Path, variants: list[str], detector: Path | None = None,
          npm_tarball: Path | None = None, check: bool = True, log=print) -> list[Path]:
    """Build `pose_landmarker_{variant}.task` for each variant into `out`; their paths."""
    out = out.expanduser()
    detector = detector or default_detector(out)
    detector_model, detector_how = detector_from(detector.expanduser())
    log(f"detector: {detector_how}")
    with tempfile.TemporaryDirectory(prefix="pose-bundles-") as temp:
        if npm_tarball is None:
            log(f"npm pack {NPM_PACKAGE} ...")
            npm_tarball = npm_pack(Path(temp))
        built = []
        for variant in variants:
            landmarks, pinned = landmark_model(npm_tarball.expanduser(), variant)
            if not pinned:
                log(f"warning: pose_landmark_{variant}.tflite is not the one of {NPM_PACKAGE} "
                    "(its shape was checked, its content was not)")
            data = bundle_bytes(detector_model, with_metadata(landmarks, LANDMARKS_PART))
            path = out / bundle_name(variant)
            write_atomically(path, data)
            if check:
                check_loads(path)
            log(f"wrote {path} ({len(data):,} bytes, sha256 "
                f"{hashlib.sha256(data).hexdigest()[:16]}){' - loads' if check else ''}")
            built.append(path)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m processors.pose_bundles",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build pose_landmarker_lite.task and pose_landmarker_heavy.task (MediaPipe "
                    "PoseLandmarker bundles) for a machine that cannot reach Google's model "
                    "storage. Machines with internet do not need this: processing.pose.model: "
                    "lite / heavy downloads Google's published bundles on first use.",
        epilog=f"""\
where the parts come from:
  person detector   --detector FILE, else the first of: OUT/pose_landmarker_full.task,
                    {DEFAULT_MODELS_DIR}/pose_landmarker_full.task, the installed mediapipe's
                    modules/pose_detection/pose_detection.tflite (mediapipe 0.10.x only)
  landmark model    pose_landmark_VARIANT.tflite of the npm package {NPM_PACKAGE}
                    (Apache-2.0): --npm-tarball FILE, else `npm pack` into a temporary folder

examples:
  # offline machine with npm and the shared full bundle
  python -m processors.pose_bundles --out ~/.cache/kvs-analytics/models \\
      --detector ../shared/models/pose_landmarker_full.task
  # no npm here: fetch the tarball elsewhere (npm pack {NPM_PACKAGE}) and copy it over
  python -m processors.pose_bundles --out models --npm-tarball mediapipe-pose-0.5.1675469404.tgz \\
      --detector mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl

then: processing.pose.model: lite (or heavy), processing.pose.models_dir: the --out folder.
The output is deterministic (same inputs, same bytes) and written atomically.""")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the bundles to")
    parser.add_argument("--npm-tarball", type=Path, metavar="FILE",
                        help=f"the .tgz of `npm pack {NPM_PACKAGE}` (default: run npm pack)")
    parser.add_argument("--detector", type=Path, metavar="FILE",
                        help="a pose_landmarker_*.task, a mediapipe 0.10.x wheel or its "
                             "pose_detection.tflite (default: see below)")
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="a variant to build; repeat for several (default: lite and heavy)")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="do not load each bundle in vision.PoseLandmarker after writing it")
    args = parser.parse_args(argv)
    try:
        build(args.out, args.variant or ["lite", "heavy"], args.detector, args.npm_tarball,
              args.check)
    except (BundleError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
