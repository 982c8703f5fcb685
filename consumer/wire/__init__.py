"""The Kinesis Video Streams wire format: EBML, the fragment model, reading and writing MKV.

The one home of the format: the consumer, the camera simulator and the local service import it.
"""

from .model import (
    Fragment,
    Frame,
    GetMediaError,
    InvalidMkvError,
    MkvError,
    Track,
    TruncatedMkvError,
)
from .reader import FragmentReader, iter_fragments, read_fragments

__all__ = [
    "Fragment", "Frame", "FragmentReader", "GetMediaError", "InvalidMkvError", "MkvError",
    "Track", "TruncatedMkvError", "iter_fragments", "read_fragments",
]
