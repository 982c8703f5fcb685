"""The Python API of kvs-analytics, for scripts and notebooks.

    from kvs_analytics import BatchPipeline, batch_config, read_pose_sequence

    config = batch_config(preset="production")       # or batch_config("batch.yaml", fps=1)
    result = BatchPipeline(config, output_dir="out").run(["videos/"])
    print(result.processed, result.skipped, result.failed)
    for video in result.videos:
        print(video.path, video.status, video.reason)

    sequence = read_pose_sequence(Path("out/poses/.../0.parquet").read_bytes())
    sequence.landmarks.shape   # (rows, 33, 5): a row per person per frame; x, y, z,
                               # visibility, presence
    sequence.table.column("track_id")
    sequence.hands             # (rows, 2, 21, 3): each person's left and right hand, x, y, z
                               # (NaN where not found); None for a file without hands

The package is named for the distribution (`pip install kvs-analytics`); the implementation
lives in `consumer` (the service and batch mode) and `processors` (the models).
"""

from consumer.batch.pipeline import BatchPipeline, BatchResult, VideoResult, batch_config
from consumer.config import Config, ConfigError, load_config
from consumer.formats.pose_sequence import PoseSequence, read_pose_sequence

__all__ = ["BatchPipeline", "BatchResult", "Config", "ConfigError", "PoseSequence",
           "VideoResult", "batch_config", "load_config", "read_pose_sequence"]
