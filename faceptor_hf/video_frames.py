"""Video frames, one at a time: from any container PyAV opens, or from an iterable of images.

    frames = VideoFrames("clip.mp4")                  # probes the file now; decodes while read
    frames.fps, frames.frame_count, frames.size       # 25.0, 250 (None when the container does not say), (w, h)
    for frame in frames.read(every=5, start_frame=100):
        frame.index, frame.timestamp, frame.image      # 100, 4.0, (H, W, 3) uint8 RGB array

Frames are numbered from 0 in decoding order; ``read(every=N)`` yields those whose index is a multiple of N (the
same frames whatever ``start_frame`` is, so a resumed run analyzes the frames an uninterrupted one would). A file's
timestamps are its presentation times in seconds from its first frame; frames given as images (PIL images, numpy
arrays, tensors: anything ``image_loading.load_image`` takes) are ``index / fps``, with ``fps`` given.

Nothing is held beyond the frame being read. Shipped with a saved model (the pipeline's ``video`` uses it): PyAV
is imported only when a file is opened, with a message naming the ``video`` extra.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".ts", ".mts", ".m2ts", ".3gp", ".ogv"})
VIDEO_EXTRA_HINT = 'pip install "faceptor-hf[video]"'


class VideoReadError(ValueError):
    """A video cannot be read: not a file, not a container PyAV opens, no video stream, or frames given without
    their rate."""


def import_av():
    """The ``av`` module (PyAV); ImportError naming the ``video`` extra without it."""
    try:
        import av
    except ImportError as error:
        raise ImportError(f"reading and writing video files needs PyAV: {VIDEO_EXTRA_HINT}") from error
    return av


@dataclass
class VideoFrame:
    """One frame: ``index`` (from 0), ``timestamp`` (seconds) and ``image`` ((H, W, 3) uint8 RGB array for a
    decoded file; the image as given otherwise)."""

    index: int
    timestamp: float
    image: object


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video: a video file suffix, or an existing file of another suffix in which PyAV
    finds a video stream of more than one frame (images, which PyAV also opens, have one). Never raises."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if not os.path.isfile(path):
        return False
    try:
        av = import_av()
        with av.open(str(path)) as container:
            streams = container.streams.video
            return bool(streams) and (streams[0].frames or 0) > 1
    except Exception:  # noqa: BLE001 - anything PyAV cannot open is not a video here
        return False


class VideoFrames:
    """The frames of ``source``: a video path, URL or file-like object (opened with PyAV, probed now so a bad file
    fails here) or an iterable of images, with ``fps`` their rate (required for images; for a file it replaces
    the container's rate in timestamps only when the container has none).

    ``fps`` (float or None), ``rate`` (the same as a Fraction, for writing), ``frame_count`` (total frames, None
    when unknown), ``size`` ((width, height), None for images until read) and ``name`` describe the source.
    """

    def __init__(self, source, fps: float | None = None):
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or fps <= 0):
            raise VideoReadError(f"fps must be a positive number of frames per second, got {fps!r}")
        self.source = source
        self.is_file = isinstance(source, (str, os.PathLike)) or hasattr(source, "read")
        self.name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else (
            getattr(source, "name", None) or ("<video stream>" if self.is_file else "<frames>"))
        self.rate = Fraction(fps).limit_denominator(100000) if fps is not None else None
        self.frame_count: int | None = None
        self.size: tuple[int, int] | None = None
        self._read_once = False
        if self.is_file:
            self._probe()
        else:
            if self.rate is None:
                raise VideoReadError("frames given as images need fps= (frames per second) for their timestamps")
            if isinstance(source, (bytes, str)) or not isinstance(source, Iterable):
                raise VideoReadError(f"a video source is a path, a file object or an iterable of frames, got "
                                     f"{type(source).__name__}")
            self.frame_count = len(source) if hasattr(source, "__len__") else None

    @property
    def fps(self) -> float | None:
        return None if self.rate is None else float(self.rate)

    def _open(self):
        av = import_av()
        is_url = isinstance(self.source, str) and "://" in self.source  # a stream FFmpeg reads (rtsp://, https://)
        if isinstance(self.source, (str, os.PathLike)) and not is_url and not os.path.isfile(self.source):
            raise VideoReadError(f"{self.name}: no such video file")
        if hasattr(self.source, "seek"):
            self.source.seek(0)
        try:
            container = av.open(self.source if hasattr(self.source, "read") else os.fspath(self.source))
        except (av.FFmpegError, ValueError, OSError) as error:
            raise VideoReadError(f"{self.name}: not a video PyAV can open ({error})") from error
        if not container.streams.video:
            container.close()
            raise VideoReadError(f"{self.name}: the container has no video stream")
        return container

    def _probe(self) -> None:
        with self._open() as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if rate:
                self.rate = Fraction(rate)
            self.size = (stream.codec_context.width, stream.codec_context.height)
            if stream.frames:
                self.frame_count = int(stream.frames)
            elif stream.duration and stream.time_base and self.rate:
                self.frame_count = round(float(stream.duration * stream.time_base * self.rate))

    def count(self, every: int = 1, start_frame: int = 0) -> int | None:
        """How many frames ``read(every, start_frame)`` yields, when the frame count is known."""
        if self.frame_count is None:
            return None
        first = -(-start_frame // every) * every
        return max(0, -(-(self.frame_count - first) // every))

    def read(self, every: int = 1, start_frame: int = 0) -> Iterator[VideoFrame]:
        """The frames whose index is a multiple of ``every`` and at least ``start_frame`` (module docstring)."""
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number of frames >= 1, got {every!r}")
        if isinstance(start_frame, bool) or not isinstance(start_frame, int) or start_frame < 0:
            raise ValueError(f"start_frame must be a frame index >= 0, got {start_frame!r}")
        if not self.is_file and self._read_once and iter(self.source) is self.source:
            raise VideoReadError("these frames were already read (an iterator reads once): give a list of frames "
                                 "or a video path to read them again")
        self._read_once = True
        return self._decoded(every, start_frame) if self.is_file else self._given(every, start_frame)

    def _given(self, every: int, start_frame: int) -> Iterator[VideoFrame]:
        for index, image in enumerate(self.source):
            if index >= start_frame and index % every == 0:
                yield VideoFrame(index, round(float(index / self.rate), 6), image)

    def _decoded(self, every: int, start_frame: int) -> Iterator[VideoFrame]:
        container = self._open()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            first_time = None
            for index, frame in enumerate(container.decode(stream)):
                time = frame.time
                if first_time is None:
                    first_time = time if time is not None else 0.0
                if index < start_frame or index % every:
                    continue
                timestamp = (time - first_time) if time is not None else float(index / (self.rate or 1))
                yield VideoFrame(index, round(float(timestamp), 6), frame.to_ndarray(format="rgb24"))
        finally:
            container.close()


__all__ = ["VIDEO_SUFFIXES", "VideoFrame", "VideoFrames", "VideoReadError", "import_av", "is_video_path"]
