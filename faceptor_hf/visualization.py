"""Overlay drawing for face-analysis results: boxes, landmarks, parsing colors and the headline predictions.

Package-only code (the CLI uses it); what each task contributes to a caption comes from the task-type registry.
"""

from __future__ import annotations

import colorsys

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from .task_decoding import decode_mask
from .task_types import TASK_TYPES

UNTRAINED_BANNER = "UNTRAINED RANDOM WEIGHTS - predictions are meaningless"


def _palette(count: int) -> np.ndarray:
    colors = [(0, 0, 0)] + [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(1, count - 1), 0.75, 1.0))
                             for i in range(count - 1)]
    return np.array(colors, dtype=np.float32)


def _font(size: int):
    try:
        return PIL.ImageFont.load_default(size=max(6, size))
    except TypeError:  # Pillow < 10.1
        return PIL.ImageFont.load_default()


def face_caption(face: dict) -> list[str]:
    """One ``task: summary`` line per task whose type has a summary (age, expression, attributes, ...)."""
    lines = []
    for name, result in face["tasks"].items():
        task_type = TASK_TYPES.get(result.get("type"))
        summary = task_type.summarize(None, result) if task_type is not None else None
        if summary:
            lines.append(f"{name}: {summary}")
    return lines


def fit_line(draw, text: str, font, width: int) -> str:
    """``text`` cut (with an ellipsis) to at most ``width`` pixels in ``font``."""
    if width <= 0 or draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _font_fitting(draw, text: str, size: int, width: int):
    """The largest font of at most ``size`` px in which ``text`` fits ``width`` (down to 8 px), and that size."""
    while size > 8 and draw.textlength(text, font=_font(size)) > width:
        size -= 1
    return _font(size), size


def track_color(track_id: int) -> tuple[int, int, int]:
    """A bright RGB color per track id; neighboring ids differ in hue by the golden angle, so they stand apart."""
    red, green, blue = colorsys.hsv_to_rgb((track_id * 0.381966) % 1.0, 0.85, 1.0)
    return int(255 * red), int(255 * green), int(255 * blue)


def draw_track_ids(image: PIL.Image.Image, faces: list[dict]) -> PIL.Image.Image:
    """Draw each face's box in its track's color with ``#<track_id>`` above it (faces without ``track_id`` are
    left alone); returns ``image``, drawn on."""
    draw = PIL.ImageDraw.Draw(image)
    scale = max(1, round(max(image.size) / 512))
    font = _font(12 * scale)
    for face in faces:
        if "track_id" not in face:
            continue
        color = track_color(int(face["track_id"]))
        x1, y1, x2, y2 = face["box"]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2 * scale)
        label = f"#{face['track_id']}"
        box = draw.textbbox((0, 0), label, font=font)
        top = y1 - (box[3] - box[1]) - 4 * scale
        top = top if top >= 0 else y1 + 2 * scale
        left = max(0, x1)
        draw.rectangle([left, top, left + box[2] + 4 * scale, top + box[3] + 2 * scale], fill=color)
        draw.text((left + 2 * scale, top), label, fill=(0, 0, 0), font=font)
    return image


def draw_overlay(image: PIL.Image.Image, faces: list[dict], untrained: bool = False, alpha: float = 0.45):
    """RGB image + pipeline faces -> a new RGB overlay image; captions and the banner are fitted to its width."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for face in faces:
        for result in face["tasks"].values():
            if "mask" in result:
                mask = decode_mask(result["mask"])
                if mask.shape != canvas.shape[:2]:
                    continue
                colors = _palette(len(result["labels"]))
                painted = mask > 0
                canvas[painted] = (1 - alpha) * canvas[painted] + alpha * colors[mask[painted]]
                break  # one parsing map per face keeps the overlay readable
    out = PIL.Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = PIL.ImageDraw.Draw(out)
    width, height = out.size
    scale = max(1, round(max(out.size) / 512))
    font = _font(12 * scale)
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        draw.rectangle([x1, y1, x2, y2], outline=(0, 255, 0), width=2 * scale)
        for result in face["tasks"].values():
            for x, y in result.get("points", []):
                draw.ellipse([x - scale, y - scale, x + scale, y + scale], fill=(255, 255, 0))
        for x, y in face["keypoints"]:
            draw.ellipse([x - 2 * scale, y - 2 * scale, x + 2 * scale, y + 2 * scale], fill=(255, 0, 255))
        lines = face_caption(face)
        if lines:
            left = int(min(max(0, x1), max(0, width - 40 * scale)))
            text = "\n".join(fit_line(draw, line, font, width - left - 2) for line in lines)
            top = y2 + 2 * scale
            box = draw.multiline_textbbox((left, top), text, font=font)
            if box[3] > height:  # no room under the face: write above it, or at the image's top edge
                top = max(0, y1 - (box[3] - box[1]) - 2 * scale)
                box = draw.multiline_textbbox((left, top), text, font=font)
            draw.rectangle(box, fill=(0, 0, 0))
            draw.multiline_text((left, top), text, fill=(255, 255, 255), font=font)
    if untrained:
        banner_font, _ = _font_fitting(draw, UNTRAINED_BANNER, 14 * scale, width - 8)
        banner = fit_line(draw, UNTRAINED_BANNER, banner_font, width - 8)
        bbox = draw.textbbox((4, 4), banner, font=banner_font)
        draw.rectangle([0, 0, width, bbox[3] + 4], fill=(200, 0, 0))
        draw.text((4, 4), banner, fill=(255, 255, 255), font=banner_font)
    return out
