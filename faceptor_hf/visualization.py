"""Overlay drawing for face-analysis results: boxes, landmarks, parsing colours and the headline predictions."""

from __future__ import annotations

import colorsys

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from .image_processing_faceptor import decode_mask

UNTRAINED_BANNER = "UNTRAINED RANDOM WEIGHTS - predictions are meaningless"


def _palette(count: int) -> np.ndarray:
    colours = [(0, 0, 0)] + [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(1, count - 1), 0.75, 1.0))
                             for i in range(count - 1)]
    return np.array(colours, dtype=np.float32)


def _font(size: int):
    try:
        return PIL.ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return PIL.ImageFont.load_default()


def face_caption(face: dict, top_attributes: int = 3) -> list[str]:
    lines = []
    for name, result in face["tasks"].items():
        if "age" in result:
            lines.append(f"age {result['age']:.0f}")
        elif "label" in result:
            lines.append(f"{result['label']} {max(result['scores'].values()):.2f}")
        elif "attributes" in result:
            best = sorted(result["attributes"].items(), key=lambda kv: -kv[1])[:top_attributes]
            lines.append(", ".join(f"{k} {v:.2f}" for k, v in best))
    return list(dict.fromkeys(lines))


def draw_overlay(image: PIL.Image.Image, faces: list[dict], untrained: bool = False, alpha: float = 0.45):
    """RGB image + pipeline faces -> a new RGB overlay image."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for face in faces:
        for result in face["tasks"].values():
            if "mask" in result:
                mask = decode_mask(result["mask"])
                if mask.shape != canvas.shape[:2]:
                    continue
                colours = _palette(len(result["labels"]))
                painted = mask > 0
                canvas[painted] = (1 - alpha) * canvas[painted] + alpha * colours[mask[painted]]
                break  # one parsing map per face keeps the overlay readable
    out = PIL.Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = PIL.ImageDraw.Draw(out)
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
        text = "\n".join(face_caption(face))
        if text:
            position = (x1, y2 + 2 * scale)
            bbox = draw.multiline_textbbox(position, text, font=font)
            draw.rectangle(bbox, fill=(0, 0, 0))
            draw.multiline_text(position, text, fill=(255, 255, 255), font=font)
    if untrained:
        banner_font = _font(14 * scale)
        bbox = draw.textbbox((4, 4), UNTRAINED_BANNER, font=banner_font)
        draw.rectangle([0, 0, out.size[0], bbox[3] + 4], fill=(200, 0, 0))
        draw.text((4, 4), UNTRAINED_BANNER, fill=(255, 255, 255), font=banner_font)
    return out
