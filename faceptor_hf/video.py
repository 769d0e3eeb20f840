"""Analyzing a video into files: one JSON record per analyzed frame, a summary per face track and, on request, the
video again with the faces and their track ids drawn on it.

    from transformers import pipeline
    from faceptor_hf.video import analyze_video
    pipe = pipeline("face-analysis", model="your-org/faceptor-base")
    result = analyze_video(pipe, "clip.mp4", "outputs", every=2, render="outputs/overlay.mp4")
    result.num_frames, result.tracks[0]["first_frame"], result.tracks_path

``frames.jsonl`` gets one line per analyzed frame, written and flushed as the frame is done:
``pipe.video``'s record (``frame_index``, ``timestamp``, ``faces`` each with ``track_id``; parsing masks run-length
encoded) plus ``run_key``, a hash of the model, the options that change results and the video file (path, size,
modification time). A rerun with the same ``run_key`` resumes after the last frame written, its tracker restored
from the written faces so track ids go on as in an uninterrupted run; a file of another ``run_key`` is started
again. Ctrl-C stops after the last complete line, writes ``tracks.json`` for what is there and raises
``VideoAnalysisInterrupted``.

``tracks.json`` summarizes each track (``summarize_tracks``): first and last frame and time, the frame where the
face has the best quality score, the mean of its unit embeddings, and per task of the model a summary chosen by
the task's readout in the task-type registry (medians of numbers such as the age, a histogram of labels such as
the expression, means of score tables such as the attributes).

Package-only code: the pipeline's ``video`` (shipped) does the analysis and tracking; this module writes files.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from .analysis import describe_model, file_input_key, is_untrained, open_jsonl, select_tasks, short_hash
from .face_tracking import DEFAULT_MAX_GAP, FaceTracker
from .image_loading import load_image
from .video_frames import VideoFrames, import_av
from .visualization import draw_overlay, draw_track_ids

logger = logging.getLogger(__name__)

FRAMES_FILE = "frames.jsonl"
TRACKS_FILE = "tracks.json"
# Codecs tried in order for the rendered video: H.264 plays everywhere; MPEG-4 part 2 is in every FFmpeg build.
RENDER_CODECS = ("libx264", "mpeg4")


@dataclass
class VideoAnalysis:
    """What ``analyze_video`` wrote: ``frames_path`` (frames.jsonl), ``tracks_path`` (tracks.json), ``render_path``
    (None without ``render``), ``num_frames`` analyzed frames in frames.jsonl (``resumed_frames`` of them from an
    earlier run), ``tracks`` (the summaries of tracks.json), ``seconds`` this call took and whether the model was
    ``untrained``."""

    frames_path: str
    tracks_path: str
    render_path: str | None
    num_frames: int
    tracks: list[dict]
    resumed_frames: int = 0
    seconds: float = 0.0
    untrained: bool = False


class VideoAnalysisInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``analyze_video``: frames.jsonl holds complete records up to the last analyzed frame and
    tracks.json summarizes them (``analysis``); the same call again resumes."""

    def __init__(self, analysis: VideoAnalysis):
        super().__init__()
        self.analysis = analysis


# ---- track summaries --------------------------------------------------------------------------------------------
class _TrackSummary:
    """Running totals of one track (``summarize_tracks``)."""

    def __init__(self, track_id: int):
        self.track_id = track_id
        self.frames = 0
        self.first = self.last = self.best = None  # (frame_index, timestamp[, quality, box])
        self.embeddings: dict[str, np.ndarray] = {}
        self.numbers: dict[str, dict[str, list[float]]] = {}
        self.labels: dict[str, dict[str, Counter]] = {}
        self.tables: dict[str, dict[str, dict[str, list[float]]]] = {}

    def add(self, record: dict, face: dict, readouts: dict[str, str]) -> None:
        frame, stamp = record["frame_index"], record["timestamp"]
        self.frames += 1
        self.first = self.first or (frame, stamp)
        self.last = (frame, stamp)
        quality = face.get("quality") or {}
        score = float(quality.get("score", face.get("score", 0.0)))
        if self.best is None or score > self.best[2]:
            self.best = (frame, stamp, score, face["box"])
        for name, result in face.get("tasks", {}).items():
            readout = readouts.get(name)
            if readout == "embedding" and "embedding" in result:
                vector = np.asarray(result["embedding"], dtype=np.float64)
                vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
                self.embeddings[name] = self.embeddings[name] + vector if name in self.embeddings else vector
            elif readout == "value":
                for key, value in result.items():
                    if key == "type":
                        continue
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.numbers.setdefault(name, {}).setdefault(key, []).append(float(value))
                    elif isinstance(value, str):
                        self.labels.setdefault(name, {}).setdefault(key, Counter())[value] += 1
                    elif isinstance(value, dict):
                        table = self.tables.setdefault(name, {}).setdefault(key, {})
                        for entry, number in value.items():
                            table.setdefault(entry, []).append(float(number))

    def summary(self) -> dict:
        out = {"track_id": self.track_id, "num_frames": self.frames, "first_frame": self.first[0],
               "first_time": self.first[1], "last_frame": self.last[0], "last_time": self.last[1],
               "best_frame": self.best[0], "best_time": self.best[1], "best_quality": round(self.best[2], 4),
               "best_box": self.best[3], "embedding": None, "embedding_task": None, "tasks": {}}
        for name, total in self.embeddings.items():
            unit = (total / max(float(np.linalg.norm(total)), 1e-12)).round(6).tolist()
            if out["embedding"] is None:
                out["embedding"], out["embedding_task"] = unit, name
            else:
                out["tasks"].setdefault(name, {})["mean_embedding"] = unit
        for name, fields in self.numbers.items():
            for key, values in fields.items():
                out["tasks"].setdefault(name, {})[f"median_{key}"] = round(statistics.median(values), 4)
        for name, fields in self.labels.items():
            for key, counts in fields.items():
                out["tasks"].setdefault(name, {})[f"{key}_histogram"] = dict(counts.most_common())
        for name, fields in self.tables.items():
            for key, table in fields.items():
                out["tasks"].setdefault(name, {})[f"mean_{key}"] = {
                    entry: round(sum(values) / len(values), 4) for entry, values in table.items()}
        return out


def summarize_tracks(records: Iterable[dict], config) -> list[dict]:
    """One summary per track of ``records`` (frame records in order, as ``pipe.video`` yields them), by track id.

    Each: ``track_id``, ``num_frames`` (analyzed frames it is in), ``first_frame`` / ``first_time``,
    ``last_frame`` / ``last_time``, ``best_frame`` / ``best_time`` / ``best_quality`` / ``best_box`` (the face with
    the highest ``quality["score"]``, the earliest of equals), ``embedding`` (the normalized mean of the unit
    embeddings of the first embedding task, ``embedding_task``; None without one) and ``tasks``: per task of
    ``config`` (a ``FaceptorConfig``) by its readout: embeddings -> ``mean_embedding``; value tasks -> per result
    field, numbers -> ``median_<field>`` (``median_age``), labels -> ``<field>_histogram`` (``label_histogram``,
    e.g. the expressions: label -> frames), score tables -> ``mean_<field>`` (``mean_attributes``). Map tasks
    (parsing, landmarks) have no track summary.
    """
    readouts = {task.name: task.readout for task in config.tasks}
    tracks: dict[int, _TrackSummary] = {}
    for record in records:
        for face in record.get("faces", ()):
            if "track_id" in face:
                track_id = int(face["track_id"])
                tracks.setdefault(track_id, _TrackSummary(track_id)).add(record, face, readouts)
    return [tracks[track_id].summary() for track_id in sorted(tracks)]


def read_records(path: str | os.PathLike, run_key: str | None = None) -> Iterator[dict]:
    """The complete records of a frames.jsonl in order (a line cut by a killed run is left out), only those of
    ``run_key`` when given."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                record["frame_index"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            if run_key is None or record.get("run_key") == run_key:
                yield record


def _write_json(path: str, value) -> None:
    """Write ``value`` as JSON to ``path`` whole or not at all (a temporary file renamed over it)."""
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1)
    os.replace(partial, path)


# ---- rendering --------------------------------------------------------------------------------------------------
def _open_encoder(container, rate, size: tuple[int, int], codec: str | None):
    av = import_av()
    errors = []
    for name in (codec,) if codec else RENDER_CODECS:
        try:
            stream = container.add_stream(name, rate=rate)
        except (av.FFmpegError, ValueError) as error:  # not in this FFmpeg build
            errors.append(f"{name}: {error}")
            continue
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        return stream
    raise ValueError(f"no video encoder available for the rendered video ({'; '.join(errors)})")


def render_video(source, records: Iterable[dict], output_path: str | os.PathLike, *, fps: float | None = None,
                 untrained: bool = False, codec: str | None = None) -> str:
    """Write ``source``'s frames with the faces of ``records`` drawn on them (``draw_overlay`` and the track ids)
    to ``output_path``, at the source's frame rate and size (rounded down to even sides, which yuv420p needs).

    ``source``: a video path, a ``VideoFrames`` or a list of frames (with ``fps``); every frame is written, and a
    frame between analyzed ones shows the faces of the analyzed frame before it. ``records``: frame records in
    frame order (e.g. ``read_records(frames.jsonl)``), read as the frames go. ``codec``: an FFmpeg encoder name
    (default H.264, else MPEG-4). Returns the path written.
    """
    av = import_av()
    frames = source if isinstance(source, VideoFrames) else VideoFrames(source, fps=fps)
    if frames.rate is None:
        raise ValueError(f"{frames.name}: the frame rate is unknown; give fps=")
    output_path = os.fspath(output_path)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    pending = iter(records)
    upcoming, faces = next(pending, None), []
    with av.open(output_path, mode="w") as container:
        stream = None
        for frame in frames.read():
            while upcoming is not None and upcoming["frame_index"] <= frame.index:
                faces, upcoming = upcoming.get("faces", []), next(pending, None)
            image = frame.image
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
                image = (load_image(image, frame.index).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            picture = draw_track_ids(draw_overlay(PIL.Image.fromarray(image), faces, untrained=untrained), faces)
            if stream is None:
                width, height = picture.size
                stream = _open_encoder(container, frames.rate, (width - width % 2, height - height % 2), codec)
            pixels = np.ascontiguousarray(np.asarray(picture)[:stream.height, :stream.width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return output_path


# ---- analysis ---------------------------------------------------------------------------------------------------
def _embedding_task(config, tasks: list[str]) -> str | None:
    names = [name for name in tasks if config.get_task(name).readout == "embedding"]
    return names[0] if names else None


def analyze_video(pipe, source, output_dir: str | os.PathLike, *, every: int = 1, render: str | None = None,
                  tasks=None, resume: bool = True, progress: bool = True, max_gap: int = DEFAULT_MAX_GAP,
                  fps: float | None = None, batch_size: int = 32, chunk_size: int = 16,
                  model_identity: dict | None = None, **options) -> VideoAnalysis:
    """Analyze the video ``source`` with the face-analysis ``pipe`` into ``output_dir`` (module docstring).

    ``source``: a video path (any container PyAV opens), a file object, or a list or iterator of frames with
    ``fps``. ``every``: analyze every N-th frame; ``max_gap``: analyzed frames a track may go unseen;
    ``tasks``: the model's task names to run (all when None); ``render``: also write the overlay video there
    (``render_video``; needs a path or a list of frames, which are read again). ``resume=False`` starts
    frames.jsonl again. ``progress``: a progress bar with frames per second. ``batch_size`` faces per model call,
    ``chunk_size`` frames analyzed together; the other options are the pipeline's (``min_face_size``,
    ``max_faces``, ``score_threshold``, ``flip_recognition``, ``mask_format`` (default "rle"), ...).
    ``model_identity`` names the weights in ``run_key`` (default ``analysis.describe_model``).
    """
    started = time.perf_counter()
    frames = source if isinstance(source, VideoFrames) else VideoFrames(source, fps=fps)
    config = pipe.model.config
    tasks = select_tasks(config, tasks)
    options = {"mask_format": "rle", "on_error": "return", **options}
    untrained = is_untrained(pipe.model)
    if isinstance(frames.source, (str, os.PathLike)):
        input_key = file_input_key(os.fspath(frames.source))
    else:
        input_key = short_hash(["frames", frames.name])  # frames given as images have no identity of their own
    # What changes the records (not batching or decoding threads) decides whether earlier records still hold.
    settings = {"tasks": sorted(tasks), "every": every, "max_gap": max_gap, "fps": frames.fps,
                "dtype": str(pipe.model.dtype).replace("torch.", ""),
                **{key: value for key, value in options.items() if key != "num_workers"}}
    identity = describe_model(pipe.model) if model_identity is None else model_identity
    run_key = short_hash([identity, settings, input_key])
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    frames_path, tracks_path = os.path.join(output_dir, FRAMES_FILE), os.path.join(output_dir, TRACKS_FILE)

    tracker = FaceTracker(max_gap=max_gap, embedding_task=_embedding_task(config, tasks))
    resumed, start_frame = 0, 0
    if resume and os.path.exists(frames_path):
        for record in read_records(frames_path):
            if record.get("run_key") != run_key:
                logger.warning(f"{frames_path} was written with another model, other options or another video; "
                               "starting it again")
                tracker = FaceTracker(max_gap=max_gap, embedding_task=_embedding_task(config, tasks))
                resumed, start_frame = 0, 0
                os.remove(frames_path)
                break
            tracker.observe(record["frame_index"], record["faces"])
            resumed, start_frame = resumed + 1, record["frame_index"] + 1
    elif os.path.exists(frames_path):
        os.remove(frames_path)

    def finish(written: int, render_path: str | None) -> VideoAnalysis:
        tracks = summarize_tracks(read_records(frames_path, run_key), config) if os.path.exists(frames_path) else []
        _write_json(tracks_path, {"source": frames.name, "fps": frames.fps, "every": every, "max_gap": max_gap,
                                  "num_frames": resumed + written, "run_key": run_key, "untrained": untrained,
                                  "tracks": tracks})
        return VideoAnalysis(frames_path, tracks_path, render_path, resumed + written, tracks, resumed,
                             time.perf_counter() - started, untrained)

    written = 0
    with open_jsonl(frames_path) as handle:
        try:
            total = frames.count(every)
            with tqdm(total=total, initial=min(resumed, total or resumed), desc="analyze video", unit="frame",
                      disable=not progress) as bar:
                for record in pipe.video(frames, every=every, start_frame=start_frame, tracker=tracker, tasks=tasks,
                                         batch_size=batch_size, chunk_size=chunk_size, **options):
                    record["run_key"] = run_key
                    if untrained:
                        record["untrained"] = True
                    handle.write(json.dumps(record) + "\n")
                    handle.flush()
                    written += 1
                    bar.update(1)
        except KeyboardInterrupt as interrupt:
            handle.flush()
            raise VideoAnalysisInterrupted(finish(written, None)) from interrupt
    render_path = None
    if render is not None:
        render_path = render_video(frames, read_records(frames_path, run_key), render, untrained=untrained)
    return finish(written, render_path)


__all__ = ["FRAMES_FILE", "TRACKS_FILE", "VideoAnalysis", "VideoAnalysisInterrupted", "analyze_video",
           "read_records", "render_video", "summarize_tracks"]
