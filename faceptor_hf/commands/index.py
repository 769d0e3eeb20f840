"""``faceptor-hf index``: build a face index from photos, search it, cluster it.

    faceptor-hf index build photos/ --model M --output gallery/ [--identity-column folder] [--min-quality 0.3]
    faceptor-hf index search gallery/ query.jpg ... -k 5 [--threshold 0.3] [--json]
    faceptor-hf index cluster gallery/ --threshold 0.5 [--min-size 2]

The work is ``faceptor_hf.search.FaceIndex``; these commands parse, load the model (``model_options``) and print.
Exit status: 0 on success, 1 when some inputs failed (build) or some query photo had no face (search), 2 for a
user's mistake.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import Counter

from .analyze import analysis_messages, first_line, open_inputs
from .errors import CommandError
from .formatting import HelpFormatter
from .model_options import add_model_arguments, model_source, parse_device

BUILD_FOLDER = ".build"  # finished chunks of an interrupted build, inside --output


def register(subparsers) -> None:
    """Add the ``index`` parser (with ``build``, ``search`` and ``cluster``) to ``subparsers``."""
    parser = subparsers.add_parser("index", help="face search: build, search and cluster a face index",
                                   description="A gallery of face embeddings (a datasets.Dataset) with a FAISS index: "
                                               "build it from photos, search it with photos, cluster it.",
                                   formatter_class=HelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="embed every face of photos, folders, globs or a dataset",
                               description="Every detected face becomes a row (source, box, keypoints, score, "
                                           "quality, embedding). An interrupted build resumes from --output.",
                               formatter_class=HelpFormatter)
    build.add_argument("inputs", nargs="*", help="image files, folders (searched recursively) or glob patterns")
    build.add_argument("--dataset", default=None, help="a Hub dataset name or data folder, or a Dataset.save_to_disk "
                                                       "folder, instead of files")
    build.add_argument("--split", default=None, help="dataset split; when not given: 'train' or the only one")
    build.add_argument("--image-column", default="image", help="dataset column holding the images")
    build.add_argument("--id-column", default=None, help="dataset column naming each row's source")
    build.add_argument("--identity-column", default=None,
                       help="who each face is: a dataset column, or 'folder' (each photo's folder name) for files")
    build.add_argument("--output", required=True, help="folder to write the index to")
    build.add_argument("--min-quality", type=float, default=None,
                       help="leave out faces whose combined quality score (0..1) is lower")
    build.add_argument("--index-factory", default=None,
                       help="FAISS index_factory for large galleries, e.g. IVF4096,Flat or HNSW32 (default Flat)")
    build.add_argument("--nprobe", type=int, default=None, help="IVF lists searched per query")
    build.add_argument("--batch-size", type=int, default=32, help="faces per model call")
    build.add_argument("--num-workers", type=int, default=4, help="image decoding threads")
    build.add_argument("--progress", action="store_true", help="show the progress bar even without a terminal")
    add_model_arguments(build)
    build.set_defaults(run=run_build)

    search = actions.add_parser("search", help="the closest gallery faces of each face of query photos",
                                formatter_class=HelpFormatter)
    search.add_argument("index", help="folder written by `faceptor-hf index build`")
    search.add_argument("queries", nargs="+", help="query photos")
    search.add_argument("-k", type=int, default=5, help="matches per query face")
    search.add_argument("--threshold", type=float, default=None,
                        help="cosine similarity below which a match is dropped; a face without one is 'unknown'")
    search.add_argument("--min-quality", type=float, default=None,
                        help="query faces with a lower combined quality score (0..1) are not searched")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_model_arguments(search)
    search.set_defaults(run=run_search)

    cluster = actions.add_parser("cluster", help="group the gallery's faces by identity",
                                 description="Writes the cluster id of each face into the index's gallery (a "
                                             "'cluster' column; -1 = in a cluster smaller than --min-size) and "
                                             "prints a summary.", formatter_class=HelpFormatter)
    cluster.add_argument("index", help="folder written by `faceptor-hf index build`")
    cluster.add_argument("--threshold", type=float, default=0.5,
                         help="cosine similarity at which faces join one cluster")
    cluster.add_argument("--min-size", type=int, default=1, help="smaller clusters get id -1")
    cluster.add_argument("--method", default="auto", choices=("auto", "agglomerative", "graph"),
                         help="average linkage, or connected components of the k-NN graph (large galleries); auto "
                              "picks by size")
    cluster.set_defaults(run=run_cluster)


def _pipeline(args: argparse.Namespace):
    import torch

    from ..loading import load_model
    from ..pipeline_face_analysis import FaceAnalysisPipeline

    device = parse_device(args.device)
    try:
        model, processor = load_model(model_source(args), dtype=args.dtype, allow_onnx=True)
        return FaceAnalysisPipeline(model=model, image_processor=processor, device=device,
                                    dtype=getattr(torch, args.dtype))
    except (ValueError, OSError) as error:
        raise CommandError(first_line(error)) from error


def _search_parameters(nprobe: int | None) -> dict | None:
    return None if nprobe is None else {"nprobe": nprobe}


def run_build(args: argparse.Namespace) -> int:
    from ..search import FaceIndex

    if not args.inputs and not args.dataset:
        raise CommandError("index build needs image files, folders or glob patterns, or --dataset")
    pipe = _pipeline(args)
    try:
        inputs = open_inputs(args)
        with analysis_messages():
            index = FaceIndex.build(pipe, inputs, identity_column=args.identity_column, batch_size=args.batch_size,
                                    min_quality=args.min_quality, index_factory=args.index_factory,
                                    search_parameters=_search_parameters(args.nprobe),
                                    image_column=args.image_column, num_workers=args.num_workers,
                                    resume_dir=os.path.join(args.output, BUILD_FOLDER),
                                    progress=True if args.progress else None)
        index.save(args.output)
    except ValueError as error:  # FaceIndexError and the analysis inputs' errors
        raise CommandError(first_line(error)) from error
    shutil.rmtree(os.path.join(args.output, BUILD_FOLDER), ignore_errors=True)
    report = index.report
    for name, message in report.errors:
        print(f"skipped {name}: {message}", file=sys.stderr)
    print(f"{report.faces} faces of {report.images} images indexed ({report.without_face} without a face, "
          f"{report.low_quality} below --min-quality, {report.failed} failed, {report.resumed} resumed); index in "
          f"{args.output}")
    return 1 if report.failed else 0


def _format_match(match: dict) -> str:
    who = match.get("identity") or match.get("source") or f"row {match['row']}"
    return f"{who} ({match['similarity']:.3f})"


def run_search(args: argparse.Namespace) -> int:
    from ..pipeline_face_analysis import FaceAnalysisError
    from ..search import FaceIndex

    if args.k <= 0:
        raise CommandError(f"-k must be a positive number of matches, got {args.k}")
    pipe = _pipeline(args)
    try:
        index = FaceIndex.load(args.index, pipe)
    except ValueError as error:
        raise CommandError(first_line(error)) from error
    status, report = 0, []
    for query in args.queries:
        try:
            faces = index.search(query, k=args.k, threshold=args.threshold, min_quality=args.min_quality)
        except FaceAnalysisError as error:
            raise CommandError(first_line(error)) from error
        if not faces:
            print(f"{query}: no face found", file=sys.stderr)
            status = 1
        report.append({"query": query, "faces": faces})
    if args.json:
        print(json.dumps(report, indent=1))
        return status
    print(f"{'query':40s} {'face':>4s}  best matches (similarity)")
    for entry in report:
        for number, face in enumerate(entry["faces"]):
            if face.get("low_quality"):
                found = f"not searched: quality {face['face']['quality']['score']} < --min-quality"
            elif face["unknown"]:
                found = "unknown (no match above the threshold)"
            else:
                found = ", ".join(_format_match(match) for match in face["matches"])
            print(f"{entry['query'][-40:]:40s} {number:4d}  {found}")
    return status


def run_cluster(args: argparse.Namespace) -> int:
    from ..search import FaceIndex

    try:
        index = FaceIndex.load(args.index)
        labels = index.cluster(threshold=args.threshold, min_size=args.min_size, method=args.method)
        index.save(args.index)
    except ValueError as error:
        raise CommandError(first_line(error)) from error
    sizes = Counter(int(label) for label in labels if label >= 0)
    unclustered = int((labels < 0).sum())
    print(f"{len(labels)} faces in {len(sizes)} clusters (threshold {args.threshold}); {unclustered} in clusters "
          f"smaller than {args.min_size}")
    print(f"{'cluster':>7s} {'faces':>6s}  sources")
    sources = index.gallery["source"] if "source" in index.gallery.column_names else None
    for label, size in sizes.most_common(20):
        members = [sources[row] for row in (labels == label).nonzero()[0][:3]] if sources else []
        print(f"{label:7d} {size:6d}  {', '.join(os.path.basename(str(name)) for name in members)}")
    if len(sizes) > 20:
        print(f"... {len(sizes) - 20} more clusters; the 'cluster' column of {args.index} has them all")
    return 0
