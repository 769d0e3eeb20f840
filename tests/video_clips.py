"""Test clips for the video analysis tests (not a test file): the shipped portraits moving across a small frame.

    from video_clips import make_clip
    clip = make_clip(tmp_path / "clip.mp4")     # 24 frames, 320 x 240, 12 fps, H.264 written with PyAV
    clip.num_frames, clip.people_in(frame)      # what each frame shows, for the assertions

The astronaut crosses the upper half from left to right and Grace Hopper the lower half from right to left, a few
pixels a frame. Grace Hopper leaves the picture for ``gap`` frames and comes back where her motion would have taken
her; one frame (``empty_frame``) shows nobody. Frames are drawn from ``examples/images`` alone, so every run writes
the same clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

IMAGES = Path(__file__).parent.parent / "examples" / "images"
# Head and shoulders of each portrait (x1, y1, x2, y2 in the photo), pasted at HEAD_SIZE: faces about 55 px wide.
HEADS = {"astronaut": ("astronaut.png", (150, 20, 300, 210)), "grace_hopper": ("grace_hopper.jpg", (140, 60, 390, 370))}
HEAD_SIZE = (84, 104)
BACKGROUND = (96, 112, 128)


@dataclass
class ClipLayout:
    """What a test clip shows: ``num_frames`` frames of ``size`` (width, height) at ``fps``; ``positions[frame]``
    maps each person in that frame to the top-left corner of their pasted head."""

    path: Path | None
    num_frames: int
    fps: int
    size: tuple[int, int]
    positions: list[dict[str, tuple[int, int]]]
    gap: range
    empty_frame: int

    def people_in(self, frame: int) -> set[str]:
        return set(self.positions[frame])

    @property
    def people(self) -> set[str]:
        return set().union(*self.positions)


def clip_layout(num_frames: int = 24, fps: int = 12, gap: range = range(9, 13), empty_frame: int = 18,
                size: tuple[int, int] = (320, 240)) -> ClipLayout:
    """Where each head is in each frame (see the module docstring); ``gap``: the frames without Grace Hopper."""
    positions = []
    for frame in range(num_frames):
        shown = {}
        if frame != empty_frame:
            shown["astronaut"] = (16 + 4 * frame, 18)
            if frame not in gap:
                shown["grace_hopper"] = (size[0] - HEAD_SIZE[0] - 16 - 4 * frame, size[1] - HEAD_SIZE[1] - 12)
        positions.append(shown)
    return ClipLayout(None, num_frames, fps, size, positions, gap, empty_frame)


def clip_frames(layout: ClipLayout) -> list[np.ndarray]:
    """The clip's frames as (height, width, 3) uint8 RGB arrays."""
    heads = {}
    for person, (file_name, box) in HEADS.items():
        with PIL.Image.open(IMAGES / file_name) as photo:
            heads[person] = photo.convert("RGB").crop(box).resize(HEAD_SIZE, PIL.Image.BICUBIC)
    frames = []
    for shown in layout.positions:
        canvas = PIL.Image.new("RGB", layout.size, BACKGROUND)
        for person, corner in shown.items():
            canvas.paste(heads[person], corner)
        frames.append(np.asarray(canvas))
    return frames


def make_clip(path: str | Path, codec: str = "libx264", **layout_options) -> ClipLayout:
    """Write the test clip to ``path`` with PyAV (near-lossless H.264 in yuv420p by default) and return its layout;
    ``layout_options`` go to ``clip_layout``."""
    import av

    layout = clip_layout(**layout_options)
    layout.path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=layout.fps)
        stream.width, stream.height = layout.size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12"}
        for pixels in clip_frames(layout):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return layout
