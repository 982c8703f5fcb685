"""Batch mode: recorded video files through the live consumer's pipeline.

`kvs-analytics batch` (consumer.batch.cli) and the Python API (`kvs_analytics.BatchPipeline`)
find video files (videos), cut each at keyframes into the fragments a camera would have sent
(file_source), and run each through a `StreamSession`, exactly as a Kinesis video stream is run:
the same decoder and sampling, processors, tracking, events, highlights, clips and outputs, with
the file's provenance in every record (`InputInformation.File`). Objects go to a folder laid out
as the bucket would be (folder_sinks) and are uploaded to S3 as they are written (uploads);
records go to JSON Lines in that folder, or to the Kinesis data stream when one is configured.
A manifest (manifest) says what was done to which file, by content hash, and is how a second
run skips finished files and an interrupted one resumes. Worker processes (pipeline) each run
one video at a time with their own models.
"""
