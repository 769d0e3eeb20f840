"""Command line: ``faceptor-hf analyze ...`` and ``faceptor-hf convert ...``.

``analyze`` takes files, folders, glob patterns or a Hugging Face dataset, writes one JSON and one overlay PNG per
image plus ``results[.rankK].jsonl`` (appended as images finish, so an interrupted run resumes where it stopped),
and prints a summary. Under ``accelerate launch`` every process takes its share of the inputs and its own device.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from . import convert_faceptor_original_to_hf

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
UNTRAINED_NOTE = ("UNTRAINED: --random-weights was used; every prediction below is meaningless and only exercises "
                  "the pipeline")


class NoModelError(RuntimeError):
    pass


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files, folders (recursive, image suffixes) and glob patterns -> sorted unique paths; unknown -> kept so the
    run reports them as failures."""
    found = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            for root, _, files in os.walk(pattern):
                found += [os.path.join(root, f) for f in sorted(files) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
        elif any(ch in pattern for ch in "*?["):
            found += sorted(glob.glob(pattern, recursive=True))
        else:
            found.append(pattern)
    return list(dict.fromkeys(found))


def build_pipeline(args):
    import torch

    from .configuration_faceptor import FaceptorConfig
    from .image_processing_faceptor import FaceptorImageProcessor
    from .modeling_faceptor import FaceptorModel
    from .pipeline_face_analysis import FaceAnalysisPipeline

    dtype = getattr(torch, args.dtype)
    if args.random_weights:
        torch.manual_seed(0)
        config = FaceptorConfig.faceptor_base()
        config.untrained = True
        model = FaceptorModel(config).to(dtype)
        processor = FaceptorImageProcessor()
    elif args.model:
        hub = {"revision": args.revision, "local_files_only": args.local_files_only or None}
        hub = {k: v for k, v in hub.items() if v is not None}
        try:
            model = FaceptorModel.from_pretrained(args.model, dtype=dtype, **hub)
        except (OSError, ValueError) as error:
            offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or args.local_files_only
            hint = (" Offline mode is on (HF_HUB_OFFLINE / --local-files-only) and it is not in the local cache: "
                    "download it once while online, or pass a local folder." if offline and not os.path.isdir(args.model)
                    else "")
            raise NoModelError(f"cannot load model {args.model!r}: {str(error).splitlines()[0]}{hint}") from error
        try:
            processor = FaceptorImageProcessor.from_pretrained(args.model, **hub)
        except OSError:
            processor = FaceptorImageProcessor()
    else:
        raise NoModelError(
            "no model given: pass --model DIR_OR_HUB_ID (a folder written by `faceptor-hf convert` from the official "
            "checkpoints, see README) or --random-weights to exercise the pipeline without trained weights")
    return FaceAnalysisPipeline(model=model.eval(), image_processor=processor, device=args.device, dtype=dtype)


def _dataset_inputs(args):
    from datasets import load_dataset

    dataset = load_dataset(args.dataset, split=args.split, streaming=True)
    for index, row in enumerate(dataset):
        yield f"{args.dataset}/{args.split}/{index}", row[args.image_column]


def _shard():
    """(rank, world size, device or None) under `accelerate launch`; (0, 1, None) otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    import torch
    from accelerate import PartialState

    # Without GPUs (or with ACCELERATE_USE_CPU) the processes still form one group, over gloo on the CPU.
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    return state.process_index, state.num_processes, str(state.device)


def _load_done(path: str) -> set[str]:
    done = set()
    if os.path.exists(path):
        with open(path) as handle:
            for line in handle:
                try:
                    done.add(json.loads(line)["input"])
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut by an interruption is redone
    return done


def _safe_stem(name: str, used: set[str]) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.splitext(os.path.basename(name))[0]) or "image"
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}"
    used.add(candidate)
    return candidate


def analyze(args) -> int:
    import PIL.Image
    from tqdm.auto import tqdm

    from .visualization import draw_overlay

    rank, world, device = _shard()
    if device is not None and args.device == "cpu":
        args.device = device
    try:
        pipe = build_pipeline(args)
    except NoModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    untrained = bool(getattr(pipe.model.config, "untrained", False))
    if untrained:
        print(f"WARNING: {UNTRAINED_NOTE}", file=sys.stderr)
    os.makedirs(args.output_dir, exist_ok=True)
    jsonl = os.path.join(args.output_dir, "results.jsonl" if world == 1 else f"results.rank{rank}.jsonl")
    if args.overwrite and os.path.exists(jsonl):
        os.remove(jsonl)
    done = _load_done(jsonl)
    if args.dataset:
        items = ((name, image) for i, (name, image) in enumerate(_dataset_inputs(args)) if i % world == rank)
        total = None
    else:
        paths = expand_inputs(args.inputs)
        if not paths:
            print("error: no input images found", file=sys.stderr)
            return 2
        mine = paths[rank::world]
        items = ((p, p) for p in mine)
        total = len(mine)
    skipped = len(done)
    stats = {"images": 0, "faces": 0, "failed": 0, "skipped": 0}
    rows, used_stems = [], set()
    started = time.perf_counter()
    pending = []

    def flush():
        if not pending:
            return
        # Decode once here (background threads) and hand the pixels to the pipeline and to the overlay; an image
        # that fails to decode goes in as given, so the pipeline reports it under its own name.
        decoded = pipe.load_images([image for _, image in pending], args.num_workers)
        inputs = [image if isinstance(pixels, Exception) else pixels for (_, image), pixels in zip(pending, decoded)]
        results = pipe(inputs, batch_size=args.batch_size, tasks=args.tasks, min_face_size=args.min_face_size,
                       max_faces=args.max_faces, mask_format="rle", num_workers=args.num_workers, on_error="return",
                       flip_recognition=args.flip_recognition)
        with open(jsonl, "a") as handle:
            for (name, _), pixels, faces in zip(pending, decoded, results):
                record = {"input": name}
                if isinstance(faces, dict):
                    record["error"] = faces["error"]
                    stats["failed"] += 1
                    rows.append((name, "FAILED", faces["error"]))
                    print(f"failed: {faces['error']}", file=sys.stderr)
                else:
                    record["faces"] = faces
                    stats["faces"] += len(faces)
                    rows.append((name, str(len(faces)), ""))
                if untrained:
                    record["untrained"] = True
                    record["warning"] = UNTRAINED_NOTE
                stem = _safe_stem(name, used_stems)
                if "faces" in record and not args.no_files:
                    with open(os.path.join(args.output_dir, stem + ".json"), "w") as out:
                        json.dump(record, out)
                    if not args.no_overlay:
                        picture = PIL.Image.fromarray((pixels.permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8"))
                        draw_overlay(picture, faces, untrained=untrained).save(os.path.join(args.output_dir, stem + ".png"))
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                stats["images"] += 1
        pending.clear()

    with tqdm(total=total, desc="analyse", unit="img", disable=not sys.stderr.isatty() and not args.progress) as bar:
        for name, image in items:
            if name in done:
                stats["skipped"] += 1
                bar.update(1)
                continue
            pending.append((name, image))
            if len(pending) >= args.chunk_size:
                count = len(pending)
                flush()
                bar.update(count)
        count = len(pending)
        flush()
        bar.update(count)
    elapsed = time.perf_counter() - started
    print(f"\n{'input':60s} faces")
    for name, faces, error in rows:
        print(f"{name[-60:]:60s} {faces} {error[:80]}")
    print(f"\n{stats['images']} images ({stats['failed']} failed, {stats['skipped']} already done of {skipped} in "
          f"{os.path.basename(jsonl)}), {stats['faces']} faces, {elapsed:.1f} s "
          f"({stats['faces'] / max(elapsed, 1e-9):.2f} faces/s); results in {args.output_dir}")
    if untrained:
        print(f"WARNING: {UNTRAINED_NOTE}")
    return 1 if stats["failed"] else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="faceptor-hf", description="Faceptor face analysis for Hugging Face")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert an official Faceptor checkpoint to a faceptor-hf folder")
    convert_faceptor_original_to_hf.add_arguments(convert)
    convert.set_defaults(run=convert_faceptor_original_to_hf.run)

    run = commands.add_parser("analyze", help="analyse every face in images, folders, globs or a dataset")
    run.add_argument("inputs", nargs="*", help="image files, folders or glob patterns")
    run.add_argument("--model", help="faceptor-hf folder or Hub id (see `faceptor-hf convert`)")
    run.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model")
    run.add_argument("--local-files-only", action="store_true", help="never contact the Hub; use the cache")
    run.add_argument("--random-weights", action="store_true", help="untrained Faceptor-Base, to exercise the path")
    run.add_argument("--output-dir", default="outputs")
    run.add_argument("--tasks", nargs="+", default=None, help="task names to run (default: all)")
    run.add_argument("--device", default="cpu")
    run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    run.add_argument("--batch-size", type=int, default=32, help="faces per model call")
    run.add_argument("--chunk-size", type=int, default=16, help="images decoded and analysed together")
    run.add_argument("--num-workers", type=int, default=4, help="image decoding threads")
    run.add_argument("--min-face-size", type=float, default=0.0)
    run.add_argument("--max-faces", type=int, default=None)
    run.add_argument("--dataset", help="Hugging Face dataset (name or local path) to stream images from")
    run.add_argument("--split", default="train")
    run.add_argument("--image-column", default="image")
    run.add_argument("--flip-recognition", action="store_true",
                     help="face embedding = embedding(face) + embedding(mirrored face), the official verification protocol")
    run.add_argument("--no-overlay", action="store_true")
    run.add_argument("--no-files", action="store_true", help="only write the JSONL")
    run.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    run.add_argument("--progress", action="store_true", help="show the progress bar even without a terminal")
    run.set_defaults(run=analyze)

    args = parser.parse_args(argv)
    if args.command == "analyze" and not args.inputs and not args.dataset:
        parser.error("analyze needs input images or --dataset")
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
