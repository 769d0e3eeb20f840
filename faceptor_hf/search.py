"""Face search and clustering: a gallery of face embeddings as a ``datasets.Dataset``, indexed with FAISS.

    from transformers import pipeline
    from faceptor_hf.search import FaceIndex
    pipe = pipeline("face-analysis", model="your-org/faceptor-base")
    index = FaceIndex.build(pipe, ["people/"], identity_column="folder")   # every face of every photo -> a row
    index.search("query.jpg", k=5, threshold=0.3)    # per query face: its best matches, or "unknown"
    index.cluster(threshold=0.5)                     # a cluster id per row
    index.save("gallery/"); FaceIndex.load("gallery/", pipe)
    index.push_to_hub("you/my-gallery"); FaceIndex.from_hub("you/my-gallery", pipe)

The gallery (``FaceIndex.gallery``) has one row per face: ``source`` (the photo's name), ``face_index`` (its
position among the photo's faces, most confident first), ``box`` [x1, y1, x2, y2], ``score`` (detector),
``keypoints`` (5 x 2), ``quality`` (``faceptor_hf.face_quality``), ``identity`` (when given) and ``embedding``
(float32[D], L2-normalized; the official verification protocol that ``pipe.verify`` uses: embedding(face) +
embedding(mirrored face), normalized). Similarity is the inner product of unit embeddings, i.e. cosine.

The index is FAISS through ``Dataset.add_faiss_index`` (``pip install faceptor-hf[search]``): exact
(``"Flat"``) by default, or any ``index_factory`` string for large galleries (``"IVF4096,Flat"``, ``"HNSW32"``)
with ``search_parameters`` such as ``{"nprobe": 32}``. Without faiss, an exact numpy search gives the same
results as ``"Flat"`` (benchmarks/RESULTS.md: its speed).

A saved index is a folder: ``data/train-00000-of-00001.parquet`` (the gallery; ``datasets.load_dataset`` reads
it), ``faiss.index`` (when FAISS built it), ``face_index.json`` (the model fingerprint, the embedding task and
size, the index settings) and ``README.md`` (a dataset card); ``push_to_hub`` uploads that folder as a dataset repo.

The model fingerprint is the embedding the model gives a fixed synthetic probe crop: a model whose probe
embedding differs (cosine below ``SAME_MODEL_COSINE``) computes other embeddings, and searching the gallery with
it is refused (``ModelMismatchError``).

Package-only code: no file a saved model ships imports this module.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .face_quality import check_min_quality, passes_quality

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INFO_FILE = "face_index.json"
FAISS_FILE = "faiss.index"
DATA_FILE = os.path.join("data", "train-00000-of-00001.parquet")
EMBEDDING = "embedding"
QUALITY_FIELDS = ("detector_score", "face_size", "sharpness", "yaw", "roll", "visible_fraction", "score")
#: Probe embeddings of one model agree to ~1e-3 across devices and precisions; different models' are unrelated.
SAME_MODEL_COSINE = 0.99
#: Above this many rows ``cluster(method="auto")`` links the k-NN graph instead of the full similarity matrix.
AGGLOMERATIVE_LIMIT = 5000
#: How many random rows train an index that needs training (IVF centroids): FAISS wants ~40 per centroid.
TRAIN_ROWS_PER_LIST = 64


class FaceIndexError(ValueError):
    """A face index cannot be built, loaded or searched as asked (empty gallery, corrupt folder, bad ``k``); the
    message names the problem in one line."""


class ModelMismatchError(FaceIndexError):
    """The model given to search a gallery is not the one that built it."""


# ---- gallery rows -----------------------------------------------------------------------------------------------
def gallery_features(embedding_size: int, with_identity: bool):
    """The ``datasets.Features`` of a gallery (module docstring)."""
    import datasets

    float32 = datasets.Value("float32")
    columns = {
        "source": datasets.Value("string"),
        "face_index": datasets.Value("int32"),
        "box": datasets.List(float32, length=4),
        "score": float32,
        "keypoints": datasets.List(datasets.List(float32, length=2), length=5),
        "quality": {name: float32 for name in QUALITY_FIELDS},
    }
    if with_identity:
        columns["identity"] = datasets.Value("string")
    columns[EMBEDDING] = datasets.List(float32, length=embedding_size)
    return datasets.Features(columns)


def embedding_column(rows: np.ndarray):
    """(N, D) float32 -> a pyarrow fixed-size-list column (no per-row Python objects: 1M rows in a second)."""
    import pyarrow as pa

    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])


def unit_rows(embeddings) -> np.ndarray:
    """(N, D) or (D,) embeddings -> (N, D) float32 rows of unit L2 norm."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().float().cpu().numpy()
    rows = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    if rows.ndim != 2:
        raise FaceIndexError(f"embeddings must be (D,) or (N, D), got shape {np.shape(embeddings)}")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


# ---- the model ----------------------------------------------------------------------------------------------------
def as_pipeline(pipe_or_model):
    """A face-analysis pipeline from a pipeline, a model object, or a model folder / Hub id."""
    from .pipeline_face_analysis import FaceAnalysisPipeline

    if pipe_or_model is None or isinstance(pipe_or_model, FaceAnalysisPipeline):
        return pipe_or_model
    if isinstance(pipe_or_model, (str, os.PathLike)):
        from .loading import ModelSource, load_model

        model, processor = load_model(ModelSource(str(pipe_or_model)).pinned(), allow_onnx=True)
        return FaceAnalysisPipeline(model=model, image_processor=processor)
    return FaceAnalysisPipeline(model=pipe_or_model)


def model_fingerprint(pipe, task: str) -> dict:
    """What identifies the embeddings ``pipe``'s model computes with ``task``: the task name, the embedding size,
    the model's name, and ``probe``, the flip-summed unit embedding of a fixed synthetic 112-px crop."""
    generator = torch.Generator().manual_seed(0)
    # A smooth pattern plus a little noise: in the range of real normalized crops, and the same on every machine.
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 112), torch.linspace(-1, 1, 112), indexing="ij")
    probe = torch.stack([torch.sin(3 * xs) * torch.cos(2 * ys), xs * ys, torch.cos(4 * ys)])[None]
    probe = (probe * 0.8 + 0.1 * torch.randn(1, 3, 112, 112, generator=generator)).clamp(-1, 1)
    model = pipe.model
    with torch.inference_mode():
        crops = probe.to(pipe.device, model.dtype)
        embedding = model(pixel_values=crops, tasks=[task]).task_logits[task]
        embedding = embedding + model(pixel_values=crops.flip(-1), tasks=[task]).task_logits[task]
    unit = unit_rows(embedding)[0]
    name = getattr(model.config, "_name_or_path", "") or f"in-memory {type(model).__name__}"
    return {"task": task, "embedding_size": int(unit.shape[0]), "model": str(name),
            "untrained": bool(getattr(model.config, "untrained", False) or getattr(model, "is_untrained", False)),
            "probe": [round(float(value), 6) for value in unit]}


def check_same_model(expected: dict | None, actual: dict, where: str) -> None:
    """Raise ``ModelMismatchError`` unless ``actual`` (``model_fingerprint``) is the model of ``expected``."""
    if expected is None:
        return  # built from stored results without a model to vouch for them
    if expected["task"] != actual["task"] or expected["embedding_size"] != actual["embedding_size"]:
        raise ModelMismatchError(
            f"{where} was built with embedding task {expected['task']!r} ({expected['embedding_size']}-d); the given "
            f"model's is {actual['task']!r} ({actual['embedding_size']}-d)")
    cosine = float(np.dot(np.asarray(expected["probe"]), np.asarray(actual["probe"])))
    if cosine < SAME_MODEL_COSINE:
        raise ModelMismatchError(
            f"{where} was built with another model ({expected['model']}; probe embeddings agree to cosine "
            f"{cosine:.3f} < {SAME_MODEL_COSINE}): its embeddings cannot be compared with {actual['model']}'s; "
            "rebuild the index with this model or load the model that built it")


# ---- building ---------------------------------------------------------------------------------------------------
@dataclass
class BuildReport:
    """What ``FaceIndex.build`` did: images read (``images``), ``faces`` indexed, faces left out by
    ``min_quality`` (``low_quality``), images ``without_face``, images that ``failed`` (with ``errors``: (name,
    message)), and images ``resumed`` from an earlier interrupted build."""

    images: int = 0
    faces: int = 0
    low_quality: int = 0
    without_face: int = 0
    failed: int = 0
    resumed: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "errors"} | {
            "errors": [list(error) for error in self.errors[:100]]}


def face_rows(source: str, faces: list[dict], task: str, identity: str | None, min_quality,
              report: BuildReport) -> list[dict]:
    """Gallery rows of one photo's faces (pipeline output), those failing ``min_quality`` left out."""
    rows = []
    for number, face in enumerate(faces):
        quality = face.get("quality")
        if not passes_quality(quality, min_quality):
            report.low_quality += 1
            continue
        row = {"source": source, "face_index": number, "box": face["box"], "score": face.get("score"),
               "keypoints": face["keypoints"],
               "quality": {name: (quality or {}).get(name) for name in QUALITY_FIELDS},
               EMBEDDING: unit_rows(face["tasks"][task]["embedding"])[0]}
        if identity is not None:
            row["identity"] = identity
        rows.append(row)
    return rows


def _input_items(inputs, identity_column: str | None, image_column: str):
    """(InputShard of the inputs, identity of the i-th item or None). Inputs as ``analyze_inputs`` takes them; the
    identity of a file is its folder's name with ``identity_column="folder"``, of a dataset row that column."""
    import datasets

    from .analysis import DatasetRows, ImageFiles

    if isinstance(inputs, (datasets.Dataset, datasets.IterableDataset)):
        name = getattr(inputs.info, "dataset_name", None) or "dataset"
        inputs = DatasetRows(inputs, name, inputs.split and str(inputs.split), image_column=image_column)
    elif not isinstance(inputs, (ImageFiles, DatasetRows)):
        inputs = ImageFiles([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    if identity_column is None:
        return inputs.shard(0, 1), lambda number, name: None
    if isinstance(inputs, ImageFiles):
        if identity_column != "folder":
            raise FaceIndexError(f"identity_column={identity_column!r}: for image files the only identity source is "
                                 "'folder' (the name of each photo's folder)")
        return inputs.shard(0, 1), lambda number, name: os.path.basename(os.path.dirname(os.path.abspath(name)))
    if not isinstance(inputs.dataset, datasets.Dataset):
        raise FaceIndexError("identity_column needs a saved datasets.Dataset; a streamed dataset is not supported")
    if identity_column not in inputs.dataset.column_names:
        raise FaceIndexError(f"identity_column={identity_column!r}: the dataset has no such column; its columns are: "
                             f"{', '.join(inputs.dataset.column_names)}")
    identities = [str(value) for value in inputs.dataset.select_columns([identity_column])[identity_column]]
    return inputs.shard(0, 1), lambda number, name: identities[number]


class _BuildProgress:
    """Rows of an interrupted build kept in ``folder``: one parquet file per finished chunk, then its inputs'
    keys appended to ``done.jsonl``; a rerun with the same model and options reads them instead of the photos."""

    def __init__(self, folder: str | None, run_key: str, features):
        self.folder, self.run_key, self.features, self.done, self.parts = folder, run_key, features, {}, []
        if folder is None:
            return
        os.makedirs(folder, exist_ok=True)
        log = os.path.join(folder, "done.jsonl")
        if os.path.exists(log):
            with open(log, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # cut by a kill: that chunk is redone
                    if entry.get("run_key") == run_key and os.path.exists(os.path.join(folder, entry["part"])):
                        self.parts.append(entry["part"])
                        self.done.update({key: entry["part"] for key in entry["inputs"]})
        self.parts = list(dict.fromkeys(self.parts))

    def save_chunk(self, rows: list[dict], input_keys: list[str]) -> None:
        if self.folder is None:
            return
        import datasets

        part = f"part-{len(self.parts):06d}.parquet"
        chunk = datasets.Dataset.from_list(rows, features=self.features) if rows else _empty(self.features)
        chunk.to_parquet(os.path.join(self.folder, part))
        with open(os.path.join(self.folder, "done.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"run_key": self.run_key, "part": part, "inputs": input_keys}) + "\n")
        self.parts.append(part)

    def all_rows(self):
        """The rows of every finished chunk, as one Dataset."""
        import datasets

        if not self.parts:
            return _empty(self.features)
        return datasets.concatenate_datasets([_read_parquet(os.path.join(self.folder, part)).cast(self.features)
                                              for part in self.parts])


@contextmanager
def _quiet_datasets():
    """datasets' own progress bars off (a gallery build shows one bar of its own)."""
    from datasets.utils import logging as datasets_logging

    was_enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            datasets_logging.enable_progress_bar()


def _empty(features):
    """A Dataset of no rows with ``features`` (``Dataset.from_list([])`` loses them)."""
    import datasets

    return datasets.Dataset.from_dict({name: [] for name in features}, features=features)


def _read_parquet(path: str):
    """A parquet file written by ``Dataset.to_parquet`` as an in-memory ``Dataset`` (features restored from the
    file's metadata; nothing written to the datasets cache)."""
    import pyarrow.parquet as pq

    return in_memory_dataset(pq.read_table(path))


def in_memory_dataset(table):
    """``datasets.Dataset`` of a pyarrow table, with a random fingerprint: deriving one from the data hashes the
    whole table (6 s per 100k embeddings)."""
    import datasets
    from datasets.fingerprint import generate_random_fingerprint

    return datasets.Dataset(table, fingerprint=generate_random_fingerprint())


# ---- the index --------------------------------------------------------------------------------------------------
def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FaceIndex:
    """A searchable gallery of faces (module docstring). Build it with ``build``, ``from_results`` or
    ``from_embeddings``; open a saved one with ``load`` / ``from_hub``.

    Attributes: ``gallery`` (the ``datasets.Dataset``, with the FAISS index attached under ``"embedding"`` when
    faiss is used), ``model_info`` (the ``model_fingerprint`` of the model that built it, or None), ``backend``
    ("faiss" or "numpy"), ``index_factory``, ``search_parameters``, ``clusters`` (the last ``cluster`` result, or
    None), ``report`` (the ``BuildReport`` of a build), ``pipe`` (the pipeline that embeds query photos, or None).
    """

    def __init__(self, gallery, *, model_info: dict | None = None, index_factory: str | None = None,
                 search_parameters: dict | None = None, backend: str = "auto", pipe=None, faiss_file: str | None = None,
                 clusters: np.ndarray | None = None, report: BuildReport | None = None):
        if EMBEDDING not in gallery.column_names:
            raise FaceIndexError(f"a gallery needs an {EMBEDDING!r} column; it has: {', '.join(gallery.column_names)}")
        if len(gallery) == 0:
            raise FaceIndexError("the gallery is empty: no face to index (no face found in the inputs, or all of them "
                                 "failed or fell below min_quality)")
        if backend not in ("auto", "faiss", "numpy"):
            raise ValueError(f"backend must be 'auto', 'faiss' or 'numpy', got {backend!r}")
        if backend == "faiss" and not faiss_available():
            raise FaceIndexError("backend='faiss' needs faiss: pip install 'faceptor-hf[search]' (faiss-cpu)")
        if backend == "auto":
            backend = "faiss" if faiss_available() else "numpy"
        if index_factory not in (None, "Flat") and backend != "faiss":
            raise FaceIndexError(f"index_factory={index_factory!r} needs faiss: pip install 'faceptor-hf[search]'")
        self.model_info, self.backend, self.report = model_info, backend, report
        self.index_factory = index_factory or "Flat"
        self.search_parameters = dict(search_parameters or {})
        self.clusters = clusters
        self.pipe = None
        self._matrix = None
        self.gallery = gallery
        if backend == "faiss":
            with _quiet_datasets():
                if faiss_file is not None:
                    self._load_faiss(faiss_file)
                else:
                    self._add_faiss_index()
            self._apply_search_parameters()
        if pipe is not None:
            self.attach(pipe)

    # -- construction --
    @classmethod
    def build(cls, pipe_or_model, inputs, *, identity_column: str | None = None, batch_size: int = 32,
              min_quality=None, task: str | None = None, index_factory: str | None = None,
              search_parameters: dict | None = None, image_column: str = "image", chunk_size: int = 64,
              num_workers: int = 4, resume_dir: str | os.PathLike | None = None, progress: bool | None = None,
              backend: str = "auto") -> "FaceIndex":
        """Embed every face of ``inputs`` and index them.

        ``inputs``: what ``faceptor_hf.analysis.analyze_inputs`` takes (image files, folders, glob patterns, a
        ``datasets.Dataset`` / ``IterableDataset`` with an ``image_column``). ``identity_column``: a dataset column
        naming each row's person, or ``"folder"`` for files (the name of each photo's folder). ``min_quality``:
        faces below it are left out (a combined quality score in [0, 1] or a dict of named thresholds, see
        ``face_quality.passes_quality``). ``task``: the embedding task (default: the model's first).
        ``resume_dir``: keep finished chunks there, so a rerun after an interruption embeds only the rest.
        An image that cannot be read is reported (``report.failed``, logged) and skipped.
        """
        import datasets

        check_min_quality(min_quality)
        pipe = as_pipeline(pipe_or_model)
        task = pipe.recognition_task(task)
        fingerprint = model_fingerprint(pipe, task)
        shard, identity_of = _input_items(inputs, identity_column, image_column)
        features = gallery_features(fingerprint["embedding_size"], identity_column is not None)
        from .analysis import short_hash

        run_key = short_hash([fingerprint["probe"][:16], task, min_quality, identity_column])
        progress_store = _BuildProgress(None if resume_dir is None else str(resume_dir), run_key, features)
        report = BuildReport()
        options = {"tasks": [task], "flip_recognition": True, "on_error": "return", "batch_size": batch_size,
                   "num_workers": num_workers}
        show = progress if progress is not None else _stderr_is_terminal()
        pending: list = []

        def flush():
            if not pending:
                return
            results = pipe([image for _, _, image, _ in pending], **options)
            rows = []
            for (number, name, _, _), faces in zip(pending, results):
                if isinstance(faces, dict):
                    report.failed += 1
                    report.errors.append((name, faces["error"]))
                    logger.warning(f"skipped: {faces['error']}")
                    continue
                if not faces:
                    report.without_face += 1
                rows += face_rows(name, faces, task, identity_of(number, name), min_quality, report)
            report.faces += len(rows)
            progress_store.save_chunk(rows, [key for _, _, _, key in pending])
            collected.extend(rows)
            pending.clear()

        collected: list[dict] = []
        with tqdm(total=shard.total, desc="index", unit="img", disable=not show) as bar:
            for number, (name, image, input_key, _) in enumerate(shard.items):
                report.images += 1
                if input_key in progress_store.done:
                    report.resumed += 1
                    bar.update(1)
                    continue
                pending.append((number, name, image, input_key))
                if len(pending) >= chunk_size:
                    count = len(pending)
                    flush()
                    bar.update(count)
            count = len(pending)
            flush()
            bar.update(count)
        with _quiet_datasets():
            # With resume_dir every chunk, earlier runs' and this one's, is a part file, in input order.
            gallery = (progress_store.all_rows() if resume_dir is not None
                       else datasets.Dataset.from_list(collected, features=features) if collected else _empty(features))
        report.faces = len(gallery)
        if len(gallery) == 0:
            raise FaceIndexError(f"no face to index: {report.images} images read, {report.without_face} without a "
                                 f"face, {report.failed} failed, {report.low_quality} faces below min_quality")
        return cls(gallery, model_info=fingerprint, index_factory=index_factory, search_parameters=search_parameters,
                   backend=backend, pipe=pipe, report=report)

    @classmethod
    def from_embeddings(cls, embeddings, *, identities: Sequence[str] | None = None, model_info: dict | None = None,
                        **options) -> "FaceIndex":
        """An index of bare embeddings (N, D): rows with only ``embedding`` (and ``identity``). ``options``: the
        constructor's (``index_factory``, ``search_parameters``, ``backend``, ``pipe``)."""
        import datasets
        import pyarrow as pa

        rows = unit_rows(embeddings)
        columns = {}
        features = {EMBEDDING: datasets.List(datasets.Value("float32"), length=rows.shape[1])}
        if identities is not None:
            if len(identities) != len(rows):
                raise FaceIndexError(f"{len(identities)} identities for {len(rows)} embeddings")
            columns["identity"] = pa.array([str(value) for value in identities], pa.string())
            features = {"identity": datasets.Value("string"), **features}
        columns[EMBEDDING] = embedding_column(rows)
        features = datasets.Features(features)
        gallery = in_memory_dataset(pa.table(columns, schema=features.arrow_schema))
        return cls(gallery, model_info=model_info, **options)

    @classmethod
    def from_results(cls, results, pipe_or_model=None, *, min_quality=None, identity_column: str | None = None,
                     **options) -> "FaceIndex":
        """An index of stored analysis results, without running the model again.

        ``results``: a ``datasets.Dataset`` (``faceptor_hf.load_results(dir)``, or any dataset) or a folder of
        parquet files. Columns read: ``embedding`` (float32[D], required; rows where it is missing are left out),
        and, when present, ``source``, ``face_index``, ``box``, ``score``, ``keypoints``, ``quality`` (a struct with
        the ``face_quality`` fields) and ``identity_column`` (copied as ``identity``). The embeddings must be the
        flip-summed ones (``analyze --flip-recognition``) to match what ``build`` and ``search`` compute.
        ``pipe_or_model``: the model that made them, recorded as the index's model (None: any model may search it).
        ``min_quality`` needs the ``quality`` column.
        """
        import datasets

        check_min_quality(min_quality)
        if isinstance(results, (str, os.PathLike)):
            results = _open_results(str(results))
        if not isinstance(results, datasets.Dataset):
            raise FaceIndexError(f"from_results takes a datasets.Dataset or a folder, got {type(results).__name__}")
        if EMBEDDING not in results.column_names:
            raise FaceIndexError(f"the results have no {EMBEDDING!r} column (analyze with a recognition task); "
                                 f"columns: {', '.join(results.column_names)}")
        if identity_column is not None and identity_column not in results.column_names:
            raise FaceIndexError(f"identity_column={identity_column!r}: the results have no such column")
        if min_quality is not None and "quality" not in results.column_names:
            raise FaceIndexError("min_quality needs a 'quality' column in the results")
        keep = [name for name in ("source", "face_index", "box", "score", "keypoints", "quality")
                if name in results.column_names]
        with _quiet_datasets():
            table = results.select_columns(keep + ([identity_column] if identity_column else []) + [EMBEDDING])
            if identity_column is not None and identity_column != "identity":
                table = table.rename_column(identity_column, "identity")
            if identity_column is not None:
                table = table.cast_column("identity", datasets.Value("string"))
            wanted = [index for index, (embedding, quality) in enumerate(zip(
                table.select_columns([EMBEDDING])[EMBEDDING],
                table["quality"] if min_quality is not None else [None] * len(table)))
                if embedding is not None and (min_quality is None or passes_quality(quality, min_quality))]
            if len(wanted) != len(table):
                table = table.select(wanted)
            if len(table) == 0:
                raise FaceIndexError("the gallery is empty: no row of the results has an embedding"
                                     + (" that passes min_quality" if min_quality is not None else ""))
            size = len(table[0][EMBEDDING])
            matrix = unit_rows(np.asarray(table.with_format("numpy")[EMBEDDING], dtype=np.float32))
            table = in_memory_dataset(table.remove_columns([EMBEDDING]).flatten_indices().data.table.append_column(
                EMBEDDING, embedding_column(matrix)))
            table = table.cast_column(EMBEDDING, datasets.List(datasets.Value("float32"), length=size))
        pipe = as_pipeline(pipe_or_model)
        model_info = None if pipe is None else model_fingerprint(pipe, pipe.recognition_task(options.pop("task", None)))
        return cls(table, model_info=model_info, pipe=pipe, **options)

    # -- the model that embeds queries --
    def attach(self, pipe_or_model) -> "FaceIndex":
        """Use ``pipe_or_model`` to embed query photos; ``ModelMismatchError`` unless it is the model that built the
        gallery. Returns self."""
        pipe = as_pipeline(pipe_or_model)
        task = self.model_info["task"] if self.model_info else pipe.recognition_task()
        check_same_model(self.model_info, model_fingerprint(pipe, task), "this gallery")
        self.pipe, self._task = pipe, task
        return self

    # -- the index --
    @property
    def embedding_size(self) -> int:
        return len(self.gallery[0][EMBEDDING])

    def __len__(self) -> int:
        return len(self.gallery)

    def _add_faiss_index(self):
        import faiss

        if self.index_factory == "Flat":
            self.gallery.add_faiss_index(column=EMBEDDING, string_factory="Flat",
                                         metric_type=faiss.METRIC_INNER_PRODUCT, batch_size=10_000)
            return
        index = faiss.index_factory(self.embedding_size, self.index_factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            # Trained on a random sample: the gallery's first rows (what add_faiss_index's train_size takes) are
            # often a few people only.
            count = len(self.gallery)
            lists = getattr(faiss.extract_index_ivf(index), "nlist", 1) if "IVF" in self.index_factory else 1
            sample = np.random.default_rng(0).choice(count, size=min(count, max(lists * TRAIN_ROWS_PER_LIST,
                                                                                10_000)), replace=False)
            vectors = self.embedding_matrix()[np.sort(sample)]
            if len(vectors) < lists:
                raise FaceIndexError(f"index_factory={self.index_factory!r} needs at least {lists} faces to train, "
                                     f"the gallery has {count}; use 'Flat' or fewer lists")
            index.train(vectors)
        self.gallery.add_faiss_index(column=EMBEDDING, custom_index=index, batch_size=10_000)

    def _load_faiss(self, path: str):
        try:
            self.gallery.load_faiss_index(EMBEDDING, path)
        except (RuntimeError, ValueError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise FaceIndexError(f"{path}: cannot read the FAISS index: {reason}") from error

    def set_search_parameters(self, parameters: dict) -> None:
        """Change the FAISS search parameters (``{"nprobe": 64}`` for IVF, ``{"efSearch": 128}`` for HNSW)."""
        self.search_parameters = dict(parameters)
        self._apply_search_parameters()

    def _apply_search_parameters(self):
        if not self.search_parameters:
            return
        import faiss

        index = self.gallery.get_index(EMBEDDING).faiss_index
        space = faiss.ParameterSpace()
        for name, value in self.search_parameters.items():
            try:
                space.set_index_parameter(index, name, value)
            except RuntimeError as error:
                raise FaceIndexError(f"search parameter {name}={value!r} does not apply to index "
                                     f"{self.index_factory!r}") from error

    def embedding_matrix(self) -> np.ndarray:
        """(N, D) float32 embeddings of the gallery rows (read once, kept)."""
        if self._matrix is None:
            # Straight from the Arrow column: the dataset's numpy formatting goes row by row.
            column = self.gallery.with_format("arrow")[EMBEDDING]
            column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
            values = column.flatten().to_numpy(zero_copy_only=False)
            self._matrix = np.ascontiguousarray(values.reshape(len(self.gallery), -1), dtype=np.float32)
        return self._matrix

    def nearest(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows per query: (similarities (Q, k'), rows (Q, k')), most similar first, k' = min(k, N).
        queries: (Q, D) or (D,) embeddings (normalized here)."""
        k = _check_k(k)
        queries = unit_rows(queries)
        if queries.shape[1] != self.embedding_size:
            raise FaceIndexError(f"query embeddings are {queries.shape[1]}-d, the gallery's {self.embedding_size}-d")
        k = min(k, len(self.gallery))
        if len(queries) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if self.backend == "faiss":
            scores, rows = self.gallery.get_index(EMBEDDING).faiss_index.search(queries, k)
            return scores.astype(np.float32), rows.astype(np.int64)
        return exact_top_k(self.embedding_matrix(), queries, k)

    # -- searching --
    def search(self, query, k: int = 5, threshold: float | None = None, min_quality=None) -> list[dict]:
        """The best ``k`` gallery matches of each face of ``query`` (a photo, as the pipeline takes it) or of each
        embedding (a (D,) or (Q, D) array / tensor).

        Returns one dict per query face (a photo without a face gives ``[]``): ``matches`` (up to ``k`` dicts, most
        similar first: ``row``, ``similarity``, and the row's ``identity``, ``source`` and ``face_index`` where the
        gallery has them), ``identity`` (the best match's, or None), ``unknown`` (True when no match reaches
        ``threshold``: matches below it are dropped, open-set), and for photos ``face`` (box, score, keypoints,
        quality). A face failing ``min_quality`` gets no matches and ``low_quality: True``.
        """
        return self.search_batch([query], k=k, threshold=threshold, min_quality=min_quality)[0]

    def search_batch(self, queries: Iterable, k: int = 5, threshold: float | None = None,
                     min_quality=None, batch_size: int = 32) -> list[list[dict]]:
        """``search`` for many queries at once (photos embedded in shared batches, one index search): a list per
        query. An embedding array (Q, D) counts as Q queries of one face each."""
        _check_k(k)
        check_min_quality(min_quality)
        if isinstance(queries, (np.ndarray, torch.Tensor)) and np.ndim(queries) == 2:
            queries = list(queries)
        queries = list(queries)
        faces_of: list[list[dict | None]] = []
        vectors = []
        photos = [(number, query) for number, query in enumerate(queries) if not _is_embedding(query)]
        found = dict(zip((number for number, _ in photos), self._embed_photos([q for _, q in photos], batch_size)))
        for number, query in enumerate(queries):
            if number in found:
                faces_of.append(found[number])
                vectors += [face[EMBEDDING] for face in found[number] if face.get(EMBEDDING) is not None]
            else:
                faces_of.append([None])
                vectors.append(unit_rows(query)[0])
        scores, rows = self.nearest(np.stack(vectors) if vectors else np.zeros((0, self.embedding_size)), k)
        columns = [name for name in ("identity", "source", "face_index") if name in self.gallery.column_names]
        described = self._describe_rows(sorted({int(row) for row in rows.flatten() if row >= 0}), columns)
        results, position = [], 0
        for faces in faces_of:
            per_query = []
            for face in faces:
                entry = {}
                if face is not None:
                    entry["face"] = {key: value for key, value in face.items() if key != EMBEDDING}
                    if not passes_quality(face.get("quality"), min_quality):
                        per_query.append({**entry, "matches": [], "identity": None, "unknown": True,
                                          "low_quality": True})
                        if face.get(EMBEDDING) is not None:
                            position += 1
                        continue
                matches = [{"row": int(row), "similarity": round(float(score), 6), **described[int(row)]}
                           for score, row in zip(scores[position], rows[position])
                           if row >= 0 and (threshold is None or score >= threshold)]
                position += 1
                per_query.append({**entry, "matches": matches,
                                  "identity": matches[0].get("identity") if matches else None,
                                  "unknown": not matches})
            results.append(per_query)
        return results

    def _describe_rows(self, rows: list[int], columns: list[str]) -> dict[int, dict]:
        if not rows or not columns:
            return {row: {} for row in rows}
        # Indexing with a list of rows (.select is refused on a dataset with an index attached).
        values = self.gallery.select_columns(columns)[rows]
        return {row: {name: values[name][index] for name in columns} for index, row in enumerate(rows)}

    def _embed_photos(self, photos: list, batch_size: int) -> list[list[dict]]:
        """Per photo its faces (pipeline output without tasks, plus ``embedding``); raises the pipeline's
        ``FaceAnalysisError`` for a photo that cannot be read."""
        if not photos:
            return []
        if self.pipe is None:
            raise FaceIndexError("this index has no model to embed query photos: pass one to FaceIndex.load(folder, "
                                 "model) or index.attach(model), or search with embeddings")
        task = self._task
        results = self.pipe(photos, tasks=[task], flip_recognition=True, batch_size=batch_size)
        out = []
        for faces in results:
            out.append([{**{key: value for key, value in face.items() if key != "tasks"},
                         EMBEDDING: unit_rows(face["tasks"][task]["embedding"])[0]} for face in faces])
        return out

    # -- clustering --
    def cluster(self, threshold: float = 0.5, min_size: int = 1, method: str = "auto", neighbors: int = 30
                ) -> np.ndarray:
        """Group the gallery's faces by identity: (N,) int64 cluster ids, numbered by first row, -1 for faces whose
        cluster has fewer than ``min_size`` faces. Also kept as ``clusters`` (saved as a ``cluster`` column).

        ``method``: ``"agglomerative"`` (average linkage on cosine similarity: two groups merge while their mean
        pairwise similarity is at least ``threshold``; needs scipy, O(N^2) memory), ``"graph"`` (connected
        components of the ``neighbors``-nearest-neighbor graph, edges of similarity >= ``threshold``; for large
        galleries) or ``"auto"`` (agglomerative up to ``AGGLOMERATIVE_LIMIT`` faces).
        """
        if method not in ("auto", "agglomerative", "graph"):
            raise ValueError(f"method must be 'auto', 'agglomerative' or 'graph', got {method!r}")
        if not -1 <= threshold <= 1:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
            raise ValueError(f"min_size must be a positive integer, got {min_size!r}")
        count = len(self.gallery)
        if method == "auto":
            method = "agglomerative" if count <= AGGLOMERATIVE_LIMIT else "graph"
        if method == "agglomerative" and count > 1:
            labels = _average_linkage(self.embedding_matrix(), threshold)
        elif method == "graph" and count > 1:
            scores, rows = self.nearest(self.embedding_matrix(), min(neighbors, count))
            labels = _components(count, rows, scores >= threshold)
        else:
            labels = np.zeros(count, np.int64)
        labels = _renumber(labels, min_size)
        self.clusters = labels
        return labels

    # -- saving and loading --
    def rows(self):
        """The gallery as a plain ``Dataset`` (no index attached), with a ``cluster`` column after ``cluster``."""
        gallery = self.gallery
        if self.clusters is not None:
            gallery = gallery.add_column("cluster", self.clusters.tolist())
        return gallery

    def info(self) -> dict:
        return {"format_version": FORMAT_VERSION, "rows": len(self.gallery), "embedding_size": self.embedding_size,
                "model": self.model_info, "backend": self.backend, "index_factory": self.index_factory,
                "search_parameters": self.search_parameters,
                "build": None if self.report is None else self.report.as_dict()}

    def save(self, folder: str | os.PathLike) -> str:
        """Write the index folder (module docstring); returns its path."""
        folder = str(folder)
        os.makedirs(os.path.join(folder, "data"), exist_ok=True)
        with _quiet_datasets():
            self.rows().to_parquet(os.path.join(folder, DATA_FILE))
            faiss_path = os.path.join(folder, FAISS_FILE)
            if self.backend == "faiss":
                self.gallery.save_faiss_index(EMBEDDING, faiss_path)
            elif os.path.exists(faiss_path):
                os.remove(faiss_path)
        with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(gallery_card(self))
        # Written last: a folder with this file is complete.
        with open(os.path.join(folder, INFO_FILE), "w", encoding="utf-8") as handle:
            json.dump(self.info(), handle, indent=1)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, pipe_or_model=None, *, backend: str = "auto",
             search_parameters: dict | None = None) -> "FaceIndex":
        """Open a folder written by ``save``. With ``pipe_or_model`` query photos can be searched; a model other
        than the one that built it raises ``ModelMismatchError``. Raises ``FaceIndexError`` for a folder that is not
        a complete face index."""
        folder = str(folder)
        info_path = os.path.join(folder, INFO_FILE)
        if not os.path.isdir(folder):
            raise FaceIndexError(f"{folder}: no such folder")
        if not os.path.isfile(info_path):
            raise FaceIndexError(f"{folder} is not a face index folder: {INFO_FILE} is missing (interrupted save, or "
                                 "not written by FaceIndex.save)")
        try:
            with open(info_path, encoding="utf-8") as handle:
                info = json.load(handle)
            version, factory = info["format_version"], info["index_factory"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise FaceIndexError(f"{info_path}: not a valid face index description ({error})") from error
        if version != FORMAT_VERSION:
            raise FaceIndexError(f"{info_path}: format version {version}, this faceptor-hf reads {FORMAT_VERSION}")
        data_path = os.path.join(folder, DATA_FILE)
        try:
            gallery = _read_parquet(data_path)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise FaceIndexError(f"{data_path}: cannot read the gallery: {str(error).splitlines()[0]}") from error
        if len(gallery) != info.get("rows"):
            raise FaceIndexError(f"{data_path} holds {len(gallery)} rows, {INFO_FILE} says {info.get('rows')}")
        clusters = None
        if "cluster" in gallery.column_names:
            clusters = np.asarray(gallery["cluster"], dtype=np.int64)
            gallery = gallery.remove_columns(["cluster"])
        faiss_path = os.path.join(folder, FAISS_FILE)
        use_faiss = backend == "faiss" or (backend == "auto" and faiss_available())
        faiss_file = faiss_path if use_faiss and os.path.isfile(faiss_path) else None
        if use_faiss and faiss_file is None and factory != "Flat":
            raise FaceIndexError(f"{faiss_path} is missing: the {factory!r} index cannot be rebuilt without it")
        parameters = info.get("search_parameters") if search_parameters is None else search_parameters
        return cls(gallery, model_info=info.get("model"), index_factory=factory, search_parameters=parameters,
                   backend=backend if backend != "auto" else ("faiss" if use_faiss else "numpy"),
                   faiss_file=faiss_file, clusters=clusters, pipe=pipe_or_model)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token=None, revision: str | None = None,
                    commit_message: str | None = None):
        """Upload the saved folder as a dataset repo ``repo_id`` (with its card) in one commit; returns the
        ``CommitInfo``. Raises ``faceptor_hf.hub.PushError`` (nothing committed) on failure."""
        from huggingface_hub import HfApi

        from .hub import PushError

        api = HfApi(token=token)
        stage = "creating the repository"
        try:
            repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
            with tempfile.TemporaryDirectory() as folder:
                self.save(folder)
                stage = "uploading"
                return api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder, revision=revision,
                                         commit_message=commit_message or f"Upload face index ({len(self)} faces)")
        except Exception as error:  # noqa: BLE001 - network/HTTP errors of many types; all mean the push failed
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PushError(f"push to {repo_id!r} failed while {stage}: {reason}. Nothing was committed.") from error

    @classmethod
    def from_hub(cls, repo_id: str, pipe_or_model=None, *, revision: str | None = None, token=None,
                 **options) -> "FaceIndex":
        """Download dataset repo ``repo_id`` (at ``revision``) and ``load`` it."""
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(repo_id, repo_type="dataset", revision=revision, token=token)
        except Exception as error:  # noqa: BLE001 - absent repo, revision, network: one line says which
            raise FaceIndexError(f"cannot download face index {repo_id!r}: "
                                 f"{str(error).strip().splitlines()[0] if str(error).strip() else error!r}") from error
        return cls.load(folder, pipe_or_model, **options)


# ---- helpers ----------------------------------------------------------------------------------------------------
def _stderr_is_terminal() -> bool:
    import sys

    return sys.stderr.isatty()


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise FaceIndexError(f"k must be a positive integer (matches per query face), got {k!r}")
    return int(k)


def _is_embedding(query) -> bool:
    """A query is an embedding when it is a 1-D numeric array, tensor or list of numbers."""
    if isinstance(query, torch.Tensor):
        return query.ndim == 1
    if isinstance(query, np.ndarray):
        return query.ndim == 1
    return isinstance(query, (list, tuple)) and len(query) > 0 and all(
        isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) for value in query)


def exact_top_k(matrix: np.ndarray, queries: np.ndarray, k: int, block: int = 65536
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top ``k`` of ``queries`` (Q, D) against ``matrix`` (N, D) in numpy, in row blocks (memory
    stays Q x block): (similarities (Q, k), rows (Q, k)), most similar first, ties by lower row."""
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_rows = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(matrix), block):
        scores = queries @ matrix[start:start + block].T
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, 1)], axis=1)
        best_rows = np.concatenate([best_rows, part + start], axis=1)
        order = np.lexsort((best_rows, -best_scores), axis=1)[:, :k]
        best_scores, best_rows = np.take_along_axis(best_scores, order, 1), np.take_along_axis(best_rows, order, 1)
    return best_scores.astype(np.float32), best_rows


def _average_linkage(matrix: np.ndarray, threshold: float) -> np.ndarray:
    try:
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import squareform
    except ImportError as error:
        raise FaceIndexError("cluster(method='agglomerative') needs scipy: pip install 'faceptor-hf[search]'; or use "
                             "method='graph'") from error
    distances = np.clip(1.0 - matrix.astype(np.float64) @ matrix.T.astype(np.float64), 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    tree = linkage(squareform(distances, checks=False), method="average")
    return fcluster(tree, t=1.0 - threshold, criterion="distance").astype(np.int64)


def _components(count: int, rows: np.ndarray, linked: np.ndarray) -> np.ndarray:
    """Connected components (union-find) of the graph with an edge from row i to ``rows[i, j]`` where
    ``linked[i, j]``."""
    parent = np.arange(count)

    def root(node):
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for node, (neighbors, keep) in enumerate(zip(rows, linked)):
        for other in neighbors[keep]:
            if other >= 0:
                a, b = root(node), root(int(other))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return np.array([root(node) for node in range(count)], dtype=np.int64)


def _renumber(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Cluster ids 0, 1, ... in order of each cluster's first row; -1 for clusters smaller than ``min_size``."""
    _, first, inverse, sizes = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    out = rank[inverse].astype(np.int64)
    out[sizes[inverse] < min_size] = -1
    if min_size > 1:  # number the kept clusters without gaps
        kept = out >= 0
        _, dense = np.unique(out[kept], return_inverse=True)
        out[kept] = dense
    return out


def _open_results(folder: str):
    """A results folder as a Dataset: ``faceptor_hf.load_results`` where it exists, else its parquet files, else a
    ``save_to_disk`` folder."""
    import datasets

    import faceptor_hf

    loader = getattr(faceptor_hf, "load_results", None)
    if loader is not None:
        return loader(folder)
    if not os.path.isdir(folder):
        raise FaceIndexError(f"{folder}: no such folder")
    parquet = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                     if name.endswith(".parquet"))
    if parquet:
        return datasets.concatenate_datasets([_read_parquet(path) for path in parquet])
    try:
        return datasets.load_from_disk(folder)
    except FileNotFoundError as error:
        raise FaceIndexError(f"{folder} holds no parquet files and no saved dataset") from error


def gallery_card(index: FaceIndex) -> str:
    """README.md of a saved index: a dataset card (YAML header with the parquet data files) saying what the rows
    are and how to load them."""
    from huggingface_hub import DatasetCard, DatasetCardData

    model = index.model_info or {}
    identities = (len(set(index.gallery["identity"])) if "identity" in index.gallery.column_names else None)
    data = DatasetCardData(tags=["faceptor", "face-recognition", "face-search", "faiss"], pretty_name="Face index",
                           configs=[{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}])
    lines = [
        "# Face index", "",
        f"A gallery of {len(index)} faces{f' of {identities} identities' if identities is not None else ''} built "
        f"with faceptor-hf (`faceptor_hf.search.FaceIndex`): one row per face with its source photo, box, detector "
        f"score, keypoints, quality and a {index.embedding_size}-d L2-normalized embedding "
        f"(task `{model.get('task', 'unknown')}` of model `{model.get('model', 'unknown')}`).", "",
        f"Index: FAISS `{index.index_factory}` on inner product (cosine), search parameters "
        f"{json.dumps(index.search_parameters)}.",
        "", "```python", "from faceptor_hf.search import FaceIndex",
        "index = FaceIndex.from_hub(REPO_ID, model)   # the model that built it; checked by fingerprint",
        "index.search(\"photo.jpg\", k=5)", "```", "",
        "The rows alone: `datasets.load_dataset(REPO_ID)`.",
    ]
    if model.get("untrained"):
        lines += ["", "**UNTRAINED**: built with random weights; every similarity is meaningless."]
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


__all__ = ["BuildReport", "FaceIndex", "FaceIndexError", "ModelMismatchError", "exact_top_k", "model_fingerprint"]
