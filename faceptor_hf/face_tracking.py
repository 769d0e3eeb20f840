"""Face tracks across video frames: which face of this frame is which face of the earlier ones.

    tracker = FaceTracker(max_gap=30, embedding_task="recog_ms1mv3")
    for frame_index, faces in analyzed_frames:       # faces as the face-analysis pipeline returns them
        tracker.update(frame_index, faces)            # sets face["track_id"] on every face

Each analyzed frame's faces are matched to the tracks alive before it with one optimal assignment
(``scipy.optimize.linear_sum_assignment``) over a cost that combines

- box overlap: the IoU of the face's box with the track's last box, or with that box moved on by the track's
  velocity (pixels per video frame, from its last two sightings) when that overlaps more, so a face that moves
  steadily while unseen is found where it went;
- embedding similarity: the cosine of the face's identity embedding (``embedding_task``) and the mean of the
  track's unit embeddings so far.

A pair may match when the boxes overlap by at least ``min_iou``, or, without overlap, when the embeddings agree by
at least ``reid_similarity`` (the same person back at another place). Among the allowed pairs the assignment
maximizes the summed ``(1 - embedding_weight) * IoU + embedding_weight * similarity``: overlap leads, so random or
weak embeddings cannot override a clear box match, and the embedding decides between boxes that overlap alike.
Faces left unmatched open new tracks; a track not seen in more than ``max_gap`` analyzed frames in a row ends.

The tracker's state is a function of the faces it was given in order, with their ``track_id``s: ``observe``
replays written records, so a resumed run continues with the same tracks. Shipped with a saved model (the
pipeline's ``video`` uses it): scipy is imported only when matching, with a message naming the ``video`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# A track unseen for this many analyzed frames ends (at 30 frames/s and every frame analyzed: one second).
DEFAULT_MAX_GAP = 30
# Least box overlap of a face with a track for a match on position alone.
DEFAULT_MIN_IOU = 0.2
# Share of the embedding similarity in a match's score (the rest is box overlap).
DEFAULT_EMBEDDING_WEIGHT = 0.3
# Cosine similarity from which a face matches a track whose box it does not overlap: well above the verification
# threshold of trained embeddings (0.3), so a stranger rarely takes over a lost track.
DEFAULT_REID_SIMILARITY = 0.5
VIDEO_EXTRA_HINT = 'pip install "faceptor-hf[video]"'


def linear_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.optimize.linear_sum_assignment`` of a (T, D) cost matrix: (rows, columns) of the optimal pairs;
    ImportError naming the extra without scipy."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as error:
        raise ImportError(f"face tracking needs scipy: {VIDEO_EXTRA_HINT}") from error
    return linear_sum_assignment(cost)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair: (A, 4) and (B, 4) [x1, y1, x2, y2] -> (A, B)."""
    a, b = boxes_a[:, None, :], boxes_b[None, :, :]
    width = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(min=0)
    height = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(min=0)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]).clip(min=0) * (a[..., 3] - a[..., 1]).clip(min=0)
    area_b = (b[..., 2] - b[..., 0]).clip(min=0) * (b[..., 3] - b[..., 1]).clip(min=0)
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


@dataclass
class FaceTrack:
    """One tracked face: its id, last box (4,) and the frame (index, and analyzed-frame ordinal) it was last seen
    in, its velocity (4,) in box pixels per video frame, and the sum of its unit embeddings (None without any)."""

    track_id: int
    box: np.ndarray
    frame_index: int
    ordinal: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    embedding_sum: np.ndarray | None = None

    def predicted_box(self, frame_index: int) -> np.ndarray:
        return self.box + self.velocity * (frame_index - self.frame_index)

    def embedding(self) -> np.ndarray | None:
        """The mean of its unit embeddings, normalized; None without any."""
        if self.embedding_sum is None:
            return None
        return self.embedding_sum / max(float(np.linalg.norm(self.embedding_sum)), 1e-12)


class FaceTracker:
    """Assigns ``track_id``s to the faces of consecutive analyzed frames (module docstring).

    ``max_gap``: analyzed frames a track may go unseen and still continue; ``min_iou``, ``embedding_weight``,
    ``reid_similarity``: the matching rule; ``embedding_task``: the task whose ``embedding`` identifies a face (None:
    boxes only). Ids count up from 1 in the order tracks open.
    """

    def __init__(self, *, max_gap: int = DEFAULT_MAX_GAP, min_iou: float = DEFAULT_MIN_IOU,
                 embedding_weight: float = DEFAULT_EMBEDDING_WEIGHT, reid_similarity: float = DEFAULT_REID_SIMILARITY,
                 embedding_task: str | None = None):
        if isinstance(max_gap, bool) or not isinstance(max_gap, int) or max_gap < 0:
            raise ValueError(f"max_gap must be a whole number of analyzed frames >= 0, got {max_gap!r}")
        if not 0 <= min_iou <= 1 or not 0 <= embedding_weight <= 1:
            raise ValueError(f"min_iou and embedding_weight must lie in [0, 1], got {min_iou!r}, {embedding_weight!r}")
        self.max_gap, self.min_iou, self.embedding_weight = max_gap, min_iou, embedding_weight
        self.reid_similarity, self.embedding_task = reid_similarity, embedding_task
        linear_assignment(np.zeros((0, 0)))  # without scipy, fail when tracking starts rather than frames later
        self.tracks: dict[int, FaceTrack] = {}
        self.next_id = 1
        self.ordinal = -1  # analyzed frames seen so far, minus one

    # ---- matching ------------------------------------------------------------------------------------------------
    def _embedding(self, face: dict) -> np.ndarray | None:
        if self.embedding_task is None:
            return None
        result = face.get("tasks", {}).get(self.embedding_task)
        if not result or "embedding" not in result:
            return None
        vector = np.asarray(result["embedding"], dtype=np.float64)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def match_scores(self, frame_index: int, faces: list[dict], tracks: list[FaceTrack]) -> np.ndarray:
        """(T, F) score of each track / face pair; -inf where the pair may not match (module docstring)."""
        if not tracks or not faces:
            return np.full((len(tracks), len(faces)), -np.inf)
        boxes = np.asarray([face["box"] for face in faces], dtype=np.float64).reshape(-1, 4)
        overlap = np.maximum(box_iou(np.stack([track.box for track in tracks]), boxes),
                             box_iou(np.stack([track.predicted_box(frame_index) for track in tracks]), boxes))
        similarity = np.zeros_like(overlap)
        known = np.zeros_like(overlap, dtype=bool)
        embeddings = [self._embedding(face) for face in faces]
        for row, track in enumerate(tracks):
            mean = track.embedding()
            for column, vector in enumerate(embeddings):
                if mean is not None and vector is not None and mean.shape == vector.shape:
                    similarity[row, column], known[row, column] = float(mean @ vector), True
        allowed = (overlap >= self.min_iou) | (known & (similarity >= self.reid_similarity))
        scores = (1 - self.embedding_weight) * overlap + self.embedding_weight * similarity.clip(min=0)
        return np.where(allowed, scores, -np.inf)

    def update(self, frame_index: int, faces: list[dict]) -> list[int]:
        """Match the faces of the next analyzed frame to the tracks, set ``face["track_id"]`` on each and return
        the ids in face order."""
        self._expire()
        alive = list(self.tracks.values())
        scores = self.match_scores(frame_index, faces, alive)
        ids: list[int | None] = [None] * len(faces)
        if scores.size and np.isfinite(scores).any():
            # The assignment needs finite costs: forbidden pairs cost more than any allowed set of pairs gains.
            cost = np.where(np.isfinite(scores), -scores, len(faces) + len(alive) + 1.0)
            for row, column in zip(*linear_assignment(cost)):
                if np.isfinite(scores[row, column]):
                    ids[column] = alive[row].track_id
        for index, face in enumerate(faces):
            if ids[index] is None:
                ids[index] = self.next_id
                self.next_id += 1
            face["track_id"] = ids[index]
        self.observe(frame_index, faces, expired=True)
        return ids

    # ---- state ---------------------------------------------------------------------------------------------------
    def _expire(self) -> None:
        """Start the next analyzed frame: end the tracks already unseen in more than ``max_gap`` analyzed frames."""
        self.ordinal += 1
        for track_id in [key for key, track in self.tracks.items()
                         if self.ordinal - track.ordinal - 1 > self.max_gap]:
            del self.tracks[track_id]

    def observe(self, frame_index: int, faces: list[dict], expired: bool = False) -> None:
        """Take the faces of the next analyzed frame with their ``track_id``s as given (a written record being
        replayed); ``update`` uses it after matching."""
        if not expired:
            self._expire()
        for face in faces:
            track_id = int(face["track_id"])
            box = np.asarray(face["box"], dtype=np.float64).reshape(4)
            embedding = self._embedding(face)
            track = self.tracks.get(track_id)
            if track is None:
                self.tracks[track_id] = FaceTrack(track_id, box, frame_index, self.ordinal, embedding_sum=embedding)
            else:
                if frame_index > track.frame_index:
                    track.velocity = (box - track.box) / (frame_index - track.frame_index)
                track.box, track.frame_index, track.ordinal = box, frame_index, self.ordinal
                if embedding is not None:
                    track.embedding_sum = embedding if track.embedding_sum is None else track.embedding_sum + embedding
            self.next_id = max(self.next_id, track_id + 1)


__all__ = ["DEFAULT_MAX_GAP", "FaceTrack", "FaceTracker", "box_iou", "linear_assignment"]
