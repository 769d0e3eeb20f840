"""Overlays: captions name their task and, like the UNTRAINED banner, fit narrow images."""

import numpy as np
import PIL.Image
import PIL.ImageDraw

from faceptor_hf.visualization import UNTRAINED_BANNER, _font, draw_overlay, face_caption, fit_line

FACE = {
    "box": [10.0, 20.0, 70.0, 90.0],
    "keypoints": [[30.0, 40.0], [50.0, 40.0], [40.0, 55.0], [32.0, 70.0], [48.0, 70.0]],
    "tasks": {
        "age_morph2": {"type": "age", "age": 41.3},
        "affect_affectnet": {"type": "affect", "label": "happy", "scores": {"happy": 0.8, "sad": 0.2}},
        "affect_rafdb": {"type": "affect", "label": "neutral", "scores": {"neutral": 0.6, "happy": 0.4}},
        "biattr_celeba": {"type": "biattr", "attributes": {"Smiling": 0.9, "Eyeglasses": 0.1, "Young": 0.7}},
        "recog_ms1mv3": {"type": "recog", "embedding": [0.6, 0.8]},
        "parsing_x": {"type": "parsing", "mask": np.zeros((120, 80), np.uint8), "labels": ["background", "skin"]},
    },
}


def test_each_caption_line_names_its_task():
    assert face_caption(FACE) == ["age_morph2: age 41", "affect_affectnet: happy 0.80",
                                  "affect_rafdb: neutral 0.60", "biattr_celeba: Smiling 0.90, Young 0.70, "
                                  "Eyeglasses 0.10"]


def test_text_is_cut_to_the_image_width():
    draw = PIL.ImageDraw.Draw(PIL.Image.new("RGB", (10, 10)))
    font = _font(12)
    cut = fit_line(draw, UNTRAINED_BANNER, font, 60)
    assert cut.endswith("…") and draw.textlength(cut, font=font) <= 60
    assert fit_line(draw, "age 41", font, 200) == "age 41"


def test_overlay_of_a_narrow_image_keeps_banner_and_captions_inside():
    image = PIL.Image.new("RGB", (80, 120), (90, 90, 90))
    out = draw_overlay(image, [FACE], untrained=True)
    pixels = np.asarray(out)
    assert out.size == (80, 120)
    assert (pixels[0:5, :, 0] > 150).all() and (pixels[0:5, :, 1] < 50).all()  # red banner across the top
    # captions do not fit under the face (ends at y=90 of 120): they are drawn above it, on black
    assert (pixels[:, :, :].sum(-1) == 0).any()
