"""Faces and hands added to another processor's results (processing.faces, processing.hands):
the base processor (pose or YOLO) finds the persons; then, frame by frame, the face analyser
and the hand analyser run on the same picture and each face and hand is linked to the person
whose box holds it (`person`: the index into the result's persons, None when none does). The
result is the base's, with `faces` and `hands` filled; name, model and batch size are the base's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from processors.base import FrameResult, Processor
from processors.frames import VideoFrame


class WithFacesAndHands:
    def __init__(self, base: Processor, faces=None, hands=None):
        """`faces`: a processors.faces.FaceAnalyzer, `hands`: a processors.hands.HandAnalyzer
        (either may be None); this processor closes them with the base."""
        self.base = base
        self.face_analyzer = faces
        self.hand_analyzer = hands
        self.name = base.name
        self.model = base.model
        self.model_version = base.model_version
        self.max_batch = base.max_batch
        self.landmark_set = getattr(base, "landmark_set", "")

    def __getattr__(self, name: str):
        return getattr(self.base, name)  # the base's own extras (metadata(), ...)

    def process(self, frames: Sequence[VideoFrame]) -> list[FrameResult]:
        from processors.faces import face_quality, link_faces
        from processors.hands import link_hands
        results = []
        for frame, result in zip(frames, self.base.process(frames), strict=True):
            faces = hands = ()
            if self.face_analyzer is not None:
                found = self.face_analyzer.faces(frame.image)
                faces = tuple(replace(face, person=person,
                                      quality=face_quality(frame.image, face.box))
                              for face, person
                              in zip(found, link_faces(found, result.persons), strict=True))
            if self.hand_analyzer is not None:
                found = self.hand_analyzer.hands(frame.image)
                hands = tuple(replace(hand, person=person) for hand, person
                              in zip(found, link_hands(found, result.persons), strict=True))
            results.append(replace(result, faces=faces, hands=hands))
        return results

    def close(self) -> None:
        for part in (self.face_analyzer, self.hand_analyzer, self.base):
            if part is not None:
                part.close()
