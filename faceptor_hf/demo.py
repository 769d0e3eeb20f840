"""A Gradio app around a face-analysis pipeline: Analyze, Verify, Search and Video tabs (``pip install
"faceptor-hf[demo]"``).

    from transformers import pipeline
    from faceptor_hf.demo import build_demo, demo_theme
    pipe = pipeline("face-analysis", model="your-org/faceptor-base")
    demo = build_demo(pipe, index="gallery/")          # index: optional, a `faceptor-hf index build` folder
    demo.launch(theme=demo_theme())                    # or gr.mount_gradio_app(app, demo, "/ui", theme=demo_theme())

Every event has an explicit ``api_name`` (``/analyze``, ``/verify``, ``/search``, ``/video``), so
``gradio_client.Client(url).predict(..., api_name="/analyze")`` drives the same functions as the page. The Search
tab exists only with an index; the Video tab only where ``faceptor_hf.video`` imports (PyAV installed). A model with
untrained weights shows ``visualization.UNTRAINED_BANNER`` at the top of the page and on every overlay.

The page needs nothing from the internet: ``demo_theme`` uses system fonts, and the Blocks send no analytics.

Package-only code: no file a saved model ships imports this module.
"""

from __future__ import annotations

import html
import importlib
import json
import os
import tempfile
from typing import TYPE_CHECKING

from .pipeline_face_analysis import VERIFICATION_THRESHOLD, FaceAnalysisError
from .task_types import TASK_TYPES
from .visualization import UNTRAINED_BANNER, draw_overlay

if TYPE_CHECKING:
    import gradio as gr

TITLE = "Faceptor face analysis"
#: Upper bound of the Search tab's "matches per face" slider.
MAX_MATCHES = 20
#: How many entries of a per-track histogram or mean (expression, attributes) the Video tab's table shows.
TOP_ENTRIES = 3


def demo_theme():
    """The demo's Gradio theme: the default look with system fonts only, so the page loads with no network."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "SFMono-Regular", "monospace"])


def is_untrained(pipe) -> bool:
    """Whether the pipeline's model has untrained (random) weights."""
    return bool(getattr(pipe.model, "is_untrained", False))


def video_module():
    """``faceptor_hf.video``, or None where it cannot be imported (PyAV missing): the Video tab is left out."""
    try:
        return importlib.import_module(".video", __package__)
    except ImportError:
        return None


# ---- tables -------------------------------------------------------------------------------------------------------
def face_rows(faces: list[dict]) -> tuple[list[str], list[list]]:
    """Per-face table of a pipeline result: (headers, rows). Columns: face number, detector score, box, combined
    quality, then one per task whose type has a summary (the registry's ``summarize``, as overlay captions)."""
    tasks = []
    for face in faces:
        for name, result in face["tasks"].items():
            task_type = TASK_TYPES.get(result.get("type"))
            if name not in tasks and task_type is not None and task_type.summarize(None, result):
                tasks.append(name)
    headers = ["face", "detector score", "box", "quality", *tasks]
    rows = []
    for number, face in enumerate(faces, start=1):
        quality = face.get("quality") or {}
        summaries = []
        for name in tasks:
            result = face["tasks"].get(name)
            task_type = TASK_TYPES.get(result.get("type")) if result else None
            summaries.append(task_type.summarize(None, result) if task_type is not None else "")
        rows.append([number, round(float(face["score"]), 3), " ".join(str(round(v)) for v in face["box"]),
                     quality.get("score"), *summaries])
    return headers, rows


def without_masks(faces: list[dict]) -> list[dict]:
    """The faces with each mask replaced by its size: a browser's JSON viewer slows to a crawl on the thousands of
    runs of a parsing mask, which the downloadable faces.json keeps."""
    light = []
    for face in faces:
        tasks = {name: {**result, "mask": {"size": result["mask"]["size"], "counts": "in faces.json"}}
                 if isinstance(result.get("mask"), dict) else result for name, result in face["tasks"].items()}
        light.append({**face, "tasks": tasks})
    return light


def match_rows(results: list[dict]) -> tuple[list[str], list[list]]:
    """Search results of one photo (``FaceIndex.search``) -> (headers, rows): one row per match of each face, or
    one row saying why a face has none."""
    headers = ["face", "rank", "identity", "source", "similarity"]
    rows = []
    for number, found in enumerate(results, start=1):
        if found.get("low_quality"):
            rows.append([number, None, "(not searched: low quality)", "", None])
        elif not found["matches"]:
            rows.append([number, None, "unknown (no match above the threshold)", "", None])
        for rank, match in enumerate(found["matches"], start=1):
            rows.append([number, rank, match.get("identity") or "", match.get("source") or f"row {match['row']}",
                         match["similarity"]])
    return headers, rows


def _is_histogram(value) -> bool:
    return isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values())


def _fits_a_cell(value) -> bool:
    """Numbers, text, None and histograms / means (label -> number) fit a cell; vectors (a mean embedding) do not."""
    return value is None or isinstance(value, (int, float, str)) or _is_histogram(value)


def _cell(value):
    """A track summary's value as one table cell: a histogram or mean as its top entries, others as they are."""
    if _is_histogram(value):
        best = sorted(value.items(), key=lambda item: -item[1])[:TOP_ENTRIES]
        return ", ".join(f"{name} {share}" if isinstance(share, int) else f"{name} {share:.2f}" for name, share in best)
    return value


def flatten_track(summary: dict, prefix: str = "") -> dict:
    """One track summary of ``analyze_video`` as table cells: the fields of each task's results (under ``tasks``)
    become columns named ``<task> <field>``, those of another nested record ``<key> <field>``; a histogram or mean
    (label -> number) is one cell; fields that do not fit a cell (vectors: a mean embedding, a box) are left out."""
    cells = {}
    for key, value in summary.items():
        if key == "tasks" and not prefix and isinstance(value, dict):
            for task, fields in value.items():
                cells.update(flatten_track(fields, f"{task} "))
        elif isinstance(value, dict) and value and not _is_histogram(value):
            cells.update(flatten_track(value, f"{prefix}{key} "))
        elif _fits_a_cell(value):
            cells[f"{prefix}{key}"] = _cell(value)
    return cells


def track_rows(tracks: list[dict]) -> tuple[list[str], list[list]]:
    """Per-track summaries of ``analyze_video`` -> (headers, rows) of their ``flatten_track`` cells, columns in the
    order the summaries give them."""
    flat = [flatten_track(track) for track in tracks]
    headers = list(dict.fromkeys(key for cells in flat for key in cells))
    return headers, [[cells.get(key) for key in headers] for cells in flat]


def _frame(headers: list[str], rows: list[list]):
    import pandas as pd

    return pd.DataFrame(rows, columns=headers)


# ---- the app ------------------------------------------------------------------------------------------------------
def _open_index(index, pipe):
    if index is None or hasattr(index, "search"):
        return index.attach(pipe) if index is not None and index.pipe is None else index
    from .search import FaceIndex

    return FaceIndex.load(index, pipe)


def build_demo(pipe, index=None, *, title: str = TITLE) -> "gr.Blocks":
    """A ``gr.Blocks`` app of ``pipe`` (a ``FaceAnalysisPipeline``): Analyze (photo -> overlay, per-face table,
    JSON without the masks, faces.json with them), Verify (two photos -> similarity and decision), Search (with
    ``index``: a ``FaceIndex`` or a folder written by ``FaceIndex.save`` / ``faceptor-hf index build``, loaded for
    ``pipe``) and Video (where ``faceptor_hf.video`` imports). Nothing is launched: call
    ``.launch(theme=demo_theme())`` or mount it with ``gr.mount_gradio_app``. Raises
    ``faceptor_hf.search.FaceIndexError`` for an index folder that cannot be used with this model."""
    import gradio as gr

    index = _open_index(index, pipe)
    video = video_module()
    untrained = is_untrained(pipe)
    # Rendered clips live here until the app is garbage-collected (Gradio copies outputs into its own cache).
    workdir = tempfile.TemporaryDirectory(prefix="faceptor-demo-")

    def analyze(image):
        if image is None:
            raise gr.Error("upload a photo first")
        try:
            faces = pipe(image, mask_format="rle")
        except FaceAnalysisError as error:
            raise gr.Error(str(error)) from error
        overlay = draw_overlay(image, faces, untrained=untrained)
        path = os.path.join(tempfile.mkdtemp(dir=workdir.name), "faces.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(faces, handle)
        return overlay, _frame(*face_rows(faces)), without_masks(faces), path

    def verify(image_a, image_b, threshold):
        if image_a is None or image_b is None:
            raise gr.Error("upload two photos first")
        try:
            result = pipe.verify(image_a, image_b, threshold=float(threshold))
        except (FaceAnalysisError, ValueError) as error:  # no face, or a model without a recognition task
            raise gr.Error(str(error)) from error
        decision = "same person" if result["same"] else "different people"
        decision += f" (cosine similarity {result['similarity']:.3f}, threshold {result['threshold']:.2f})"
        if untrained:
            decision += f" - {UNTRAINED_BANNER}"
        return result["similarity"], decision

    def search(image, k, threshold):
        if image is None:
            raise gr.Error("upload a photo first")
        try:
            results = index.search(image, k=int(k), threshold=float(threshold))
        except (FaceAnalysisError, ValueError) as error:
            raise gr.Error(str(error)) from error
        return _frame(*match_rows(results)), results

    def analyze_clip(clip, every):
        if not clip:
            raise gr.Error("upload a video first")
        output_dir = tempfile.mkdtemp(dir=workdir.name)
        try:
            analysis = video.analyze_video(pipe, clip, output_dir, every=int(every),
                                           render=os.path.join(output_dir, "rendered.mp4"), progress=False)
        except (FaceAnalysisError, ValueError, OSError) as error:
            raise gr.Error(f"{os.path.basename(str(clip))}: {error}") from error
        summary = f"{analysis.num_frames} frames analyzed, {len(analysis.tracks)} face tracks"
        return analysis.render_path, _frame(*track_rows(analysis.tracks)), summary

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {html.escape(title)}")
        if untrained:
            gr.HTML(f'<div style="background:#c80000;color:#fff;padding:8px;font-weight:bold">'
                    f"{html.escape(UNTRAINED_BANNER)}</div>", elem_id="untrained-banner")
        with gr.Tab("Analyze", elem_id="tab-analyze"):
            with gr.Row():
                photo = gr.Image(type="pil", label="photo", elem_id="analyze-input")
                overlay = gr.Image(type="pil", label="overlay", elem_id="analyze-overlay", interactive=False,
                                   show_label=False)  # the label would cover the UNTRAINED banner
            run_analyze = gr.Button("Analyze", variant="primary", elem_id="analyze-button")
            table = gr.Dataframe(label="faces", elem_id="analyze-table", interactive=False)
            with gr.Row():
                faces_json = gr.JSON(label="JSON (masks: in the file)", elem_id="analyze-json")
                faces_file = gr.File(label="faces.json (with run-length encoded masks)", elem_id="analyze-file")
            run_analyze.click(analyze, [photo], [overlay, table, faces_json, faces_file], api_name="analyze")
        with gr.Tab("Verify", elem_id="tab-verify"):
            with gr.Row():
                photo_a = gr.Image(type="pil", label="photo A", elem_id="verify-input-a")
                photo_b = gr.Image(type="pil", label="photo B", elem_id="verify-input-b")
            threshold = gr.Slider(-1.0, 1.0, value=VERIFICATION_THRESHOLD, step=0.01, label="threshold (cosine)")
            run_verify = gr.Button("Verify", variant="primary", elem_id="verify-button")
            similarity = gr.Number(label="cosine similarity", elem_id="verify-similarity")
            decision = gr.Textbox(label="decision", elem_id="verify-decision")
            run_verify.click(verify, [photo_a, photo_b, threshold], [similarity, decision], api_name="verify")
        if index is not None:
            with gr.Tab("Search", elem_id="tab-search"):
                query = gr.Image(type="pil", label="query photo", elem_id="search-input")
                with gr.Row():
                    k = gr.Slider(1, MAX_MATCHES, value=5, step=1, label="matches per face")
                    search_threshold = gr.Slider(-1.0, 1.0, value=VERIFICATION_THRESHOLD, step=0.01,
                                                 label="threshold (cosine; weaker matches are dropped)")
                run_search = gr.Button("Search", variant="primary", elem_id="search-button")
                matches = gr.Dataframe(label=f"matches in {len(index)} gallery faces", elem_id="search-table",
                                       interactive=False)
                matches_json = gr.JSON(label="JSON", elem_id="search-json")
                run_search.click(search, [query, k, search_threshold], [matches, matches_json], api_name="search")
        if video is not None:
            with gr.Tab("Video", elem_id="tab-video"):
                clip = gr.Video(label="clip", elem_id="video-input", sources=["upload"])
                every = gr.Slider(1, 30, value=1, step=1, label="analyze every n-th frame")
                run_video = gr.Button("Analyze video", variant="primary", elem_id="video-button")
                rendered = gr.Video(label="rendered clip", elem_id="video-output", interactive=False)
                tracks = gr.Dataframe(label="face tracks", elem_id="video-table", interactive=False)
                summary = gr.Textbox(label="summary", elem_id="video-summary")
                run_video.click(analyze_clip, [clip, every], [rendered, tracks, summary], api_name="video")
    demo.faceptor_workdir = workdir  # kept as long as the app
    return demo


__all__ = ["build_demo", "demo_theme", "face_rows", "flatten_track", "match_rows", "track_rows", "video_module",
           "without_masks"]
