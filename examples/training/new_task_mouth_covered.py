"""A task the official model lacks, added by configuration alone: "is the mouth covered?" (e.g. by a mask).

The example builds its own small dataset from the two portraits in ``examples/images``: random zoom, shift and
color changes, and in half of the samples a gray patch over the mouth; the 5 face keypoints come from the
package's detector and follow every change. The new task is one entry of the training config::

    mouth_covered: {dataset: ..., type: classification, labels: [visible, covered], batch_size: 16}

and is trained from a pretrained folder (encoder frozen by default), saved, and used through
``pipeline("face-analysis")`` like any official task.

    python examples/training/new_task_mouth_covered.py --pretrained path/to/faceptor-base --output runs/mouth
    python examples/training/new_task_mouth_covered.py --tiny --output runs/mouth-demo   # no weights needed

``--tiny`` starts from a small random model instead of trained weights: it shows the mechanics in about a minute
on a CPU, not a useful classifier.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import PIL.Image
import PIL.ImageEnhance
import torch
from datasets import Array2D, ClassLabel, Dataset, Features, Image, List, Value

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTOS = [os.path.join(HERE, "..", "images", name) for name in ("astronaut.png", "grace_hopper.jpg")]
LABELS = ["visible", "covered"]


def detect_keypoints(image: PIL.Image.Image) -> np.ndarray:
    """(5, 2) keypoints of the most confident face."""
    from faceptor_hf.face_detection import RetinaFaceDetector
    from faceptor_hf.image_loading import load_image

    found = RetinaFaceDetector()([load_image(image)])[0]
    best = int(np.argmax(np.asarray(found["scores"])))
    return np.asarray(found["keypoints"], dtype=np.float32).reshape(-1, 5, 2)[best]


def make_samples(count: int, seed: int) -> dict:
    """``count`` rows in the common schema: image, face_keypoints, label."""
    rng = np.random.default_rng(seed)
    sources = [PIL.Image.open(path).convert("RGB") for path in PHOTOS]
    points = [detect_keypoints(image) for image in sources]
    rows = {"image": [], "face_box": [], "face_keypoints": [], "label": []}
    for index in range(count):
        which = index % len(sources)
        image, keypoints = sources[which], points[which]
        scale = rng.uniform(0.8, 1.2)
        shift = rng.uniform(-0.05, 0.05, size=2) * np.array(image.size)
        size = (int(image.width * scale), int(image.height * scale))
        picture = image.resize(size, PIL.Image.BILINEAR)
        canvas = PIL.Image.new("RGB", image.size, tuple(int(v) for v in rng.integers(0, 255, 3)))
        canvas.paste(picture, (int(shift[0]), int(shift[1])))
        moved = keypoints * scale + shift
        canvas = PIL.ImageEnhance.Brightness(canvas).enhance(rng.uniform(0.7, 1.3))
        covered = index % 2 == 1
        if covered:  # a patch over both mouth corners and the chin below them
            mouth = moved[3:5]
            width = np.linalg.norm(mouth[1] - mouth[0])
            x0, y0 = mouth.min(0) - [0.5 * width, 0.6 * width]
            x1, y1 = mouth.max(0) + [0.5 * width, 1.0 * width]
            gray = int(rng.integers(90, 200))
            canvas.paste((gray, gray, gray), (int(x0), int(y0), int(x1), int(y1)))
        rows["image"].append(canvas)
        rows["face_box"].append(None)
        rows["face_keypoints"].append(moved.astype(np.float32).tolist())
        rows["label"].append(int(covered))
    return rows


def build_dataset(folder: str, count: int, seed: int) -> str:
    features = Features({"image": Image(), "face_box": List(Value("float32"), length=4),
                         "face_keypoints": Array2D((5, 2), "float32"), "label": ClassLabel(names=LABELS)})
    Dataset.from_dict(make_samples(count, seed), features=features).save_to_disk(folder)
    return folder


def tiny_pretrained(folder: str) -> str:
    """A small random model standing in for trained weights (``--tiny``)."""
    from faceptor_hf import FaceptorConfig, FaceptorImageProcessor, FaceptorModel

    torch.manual_seed(0)
    config = FaceptorConfig(tasks=["age_morph2", "affect_rafdb"], hidden_size=48, num_hidden_layers=4,
                            num_attention_heads=4, intermediate_size=96, position_grid_size=8,
                            recognition_layer=3, decoder_levels=[3], decoder_hidden_size=32, decoder_num_layers=2,
                            decoder_num_attention_heads=4, decoder_ffn_dim=64)
    model = FaceptorModel(config)
    model.save_pretrained(folder)
    FaceptorImageProcessor().save_pretrained(folder)
    return folder


def main(argv=None):
    from transformers import pipeline

    from faceptor_hf.training.config import parse_config
    from faceptor_hf.training.trainer import FaceptorTrainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", help="faceptor-hf folder or Hub id to start from")
    parser.add_argument("--tiny", action="store_true", help="start from a small random model (a demo, no weights)")
    parser.add_argument("--output", default="runs/mouth-covered")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--train-encoder", action="store_true", help="also fine-tune the encoder")
    args = parser.parse_args(argv)
    if not args.pretrained and not args.tiny:
        parser.error("give --pretrained DIR_OR_HUB_ID, or --tiny for a demo without trained weights")
    work = tempfile.mkdtemp(prefix="mouth_covered_")
    pretrained = args.pretrained or tiny_pretrained(os.path.join(work, "start"))
    train_rows = build_dataset(os.path.join(work, "train"), args.samples, seed=0)
    test_rows = build_dataset(os.path.join(work, "test"), max(8, args.samples // 4), seed=1)
    config = parse_config({
        "model": {"pretrained": pretrained},
        "tasks": {"mouth_covered": {"dataset": train_rows, "type": "classification", "labels": LABELS,
                                    "batch_size": 8, "eval_dataset": test_rows, "eval_split": "test"}},
        "run": {"output_dir": args.output, "max_steps": args.steps, "learning_rate": 1e-4,
                "warmup_steps": min(5, args.steps),
                "head_lr_multiplier": 10.0, "freeze": [] if args.train_encoder else ["model.encoder."],
                "eval_steps": args.steps, "logging_steps": 10, "num_workers": 0, "report_to": "none"},
    })
    FaceptorTrainer(config).train()
    pipe = pipeline("face-analysis", model=args.output)
    test = Dataset.load_from_disk(test_rows)
    correct = 0
    for row in test:
        faces = pipe(row["image"], face_keypoints=[row["face_keypoints"]], tasks=["mouth_covered"])
        correct += faces[0]["tasks"]["mouth_covered"]["label"] == LABELS[row["label"]]
    print(f"mouth_covered accuracy on {len(test)} generated test faces: {correct / len(test):.2f}")
    print(f"model with the new task: {args.output}")


if __name__ == "__main__":
    main()
