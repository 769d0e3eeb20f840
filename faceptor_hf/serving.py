"""The REST server of ``faceptor-hf serve``: FastAPI endpoints over one ``FaceAnalysisPipeline``, with the photos of
concurrent requests analyzed together in shared pipeline calls.

    from faceptor_hf.serving import create_app
    app = create_app(pipe, max_batch=32, max_wait_ms=10)     # pipe = pipeline("face-analysis", model=...)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints (request and response formats in docs/serve.md): ``POST /analyze`` (one photo -> its faces),
``POST /embed`` (one photo -> the face-recognition embedding of each face), ``POST /verify`` (two photos -> same
person?), ``GET /tasks`` (the model's tasks) and ``GET /health`` (model identity, untrained flag, batching counts).
A POST is ``multipart/form-data`` (image files, and an ``options`` field holding a JSON object) or JSON (images as
base64 or ``data:`` URIs, ``options`` an object). Options are the pipeline's own, checked by the pipeline's own
validation; parsing masks default to ``mask_format="rle"``, which keeps responses small.

Each request decodes its images and validates its options itself (in the server's thread pool), so a bad request
is answered 4xx, with ``{"error": "<what is wrong>"}``, before anything is queued. The decoded photos then wait in
a ``PhotoBatcher``: its one worker thread runs the model, collecting up to ``max_batch`` photos of waiting
requests with equal options (or what came within ``max_wait_ms`` of the first) into one pipeline call, while the
event loop keeps accepting requests.

Package-only code (needs the ``serve`` extra: fastapi, uvicorn, python-multipart).
"""


import asyncio
import base64
import binascii
import collections
import gc
import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypedDict

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from huggingface_hub.errors import StrictDataclassError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .face_quality import check_min_quality
from .image_loading import ImageLoadError, ImageTooLargeError, UnrecognizedImageError, load_image
from .image_processing_faceptor import FaceInputError, check_options
from .pipeline_face_analysis import VERIFICATION_THRESHOLD, FaceAnalysisError, FaceAnalysisOptions, FaceAnalysisPipeline

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_WAIT_MS = 10.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: Pipeline options the server sets itself: batching is the server's, and errors must come back per request.
SERVER_OPTIONS = {"batch_size": "--max-batch", "num_workers": "the server", "on_error": "the server",
                  "detector": "the server"}
#: Options that hold one value per photo of the call (they travel with their photo in a shared call).
PER_PHOTO_OPTIONS = ("face_keypoints", "face_boxes")
JSON_MASK_FORMATS = ("list", "rle")


class RequestError(Exception):
    """A request the server cannot answer as asked; ``status`` is its 4xx code and the message names the
    problem (it becomes the response's ``{"error": message}``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class VerifyOptions(TypedDict, total=False):
    """Options of ``POST /verify`` besides the pipeline's (see ``FaceAnalysisPipeline.verify``)."""

    threshold: int | float
    task: str | None
    flip: bool
    min_quality: object


# ---- the batching queue ------------------------------------------------------------------------------------------
@dataclass(eq=False)
class PhotoJob:
    """The decoded photos of one request, the pipeline options they are analyzed with (``per_photo``: the values
    of ``PER_PHOTO_OPTIONS`` given, one per photo) and the future that receives their results."""

    photos: list[torch.Tensor]
    options: dict
    per_photo: dict
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> str:
        """Jobs with equal keys may share one pipeline call: equal options, and the same per-photo options given."""
        return json.dumps([self.options, sorted(self.per_photo)], sort_keys=True, default=repr)


class SameSizeDetector:
    """The pipeline's detector run over the photos of one size at a time. A detector batch pads its photos to a
    common size, which moves the boxes found near the padded edges' receptive field (by tenths of a pixel); so that
    a request's answer does not depend on which other requests share its call, photos of different sizes are never
    padded together. Photos of one size still share a detector batch.

    The pipeline's detector is looked up when first needed: a server whose clients give face boxes runs without
    the detector's weights installed."""

    def __init__(self, pipe: FaceAnalysisPipeline):
        self.pipe = pipe

    @property
    def detector(self):
        return self.pipe.detector

    @property
    def score_threshold(self):
        return getattr(self.detector, "score_threshold", None)

    @score_threshold.setter
    def score_threshold(self, value):
        self.detector.score_threshold = value

    def __call__(self, images: list[torch.Tensor]) -> list[dict]:
        by_size = collections.defaultdict(list)
        for index, image in enumerate(images):
            by_size[tuple(image.shape[-2:])].append(index)
        found = [None] * len(images)
        for indices in by_size.values():
            for index, faces in zip(indices, self.detector([images[index] for index in indices])):
                found[index] = faces
        return found


class PhotoBatcher:
    """One worker thread that runs ``pipe`` over the photos of queued ``PhotoJob``s: up to ``max_batch`` photos of
    jobs with equal options per call, waiting at most ``max_wait_ms`` after the oldest job arrived for more to
    come. Jobs with other options wait for a call of their own; a job's photos are never split between calls.
    Faces are detected with ``SameSizeDetector``, so each photo's answer is the one it gets alone (up to float
    rounding).

    ``photos_per_call`` counts the calls by their number of photos (the histogram ``/health`` shows)."""

    def __init__(self, pipe: FaceAnalysisPipeline, max_batch: int = DEFAULT_MAX_BATCH,
                 max_wait_ms: float = DEFAULT_MAX_WAIT_MS):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        self.pipe, self.max_batch, self.max_wait = pipe, max_batch, max_wait_ms / 1000
        self.detector = SameSizeDetector(pipe)
        self.photos_per_call: collections.Counter = collections.Counter()
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="faceptor-batcher", daemon=True)
        self._worker.start()

    def submit(self, photos: list[torch.Tensor], options: dict, per_photo: dict | None = None) -> Future:
        """Queue the photos of one request; the future's result is one pipeline result per photo (its list of
        faces, or ``{"error": ..., "input": ...}``)."""
        job = PhotoJob(photos, options, per_photo or {})
        if not self._worker.is_alive():
            raise RuntimeError("the batching worker has stopped")
        self._queue.put(job)
        return job.future

    async def analyze(self, photos: list[torch.Tensor], options: dict, per_photo: dict | None = None) -> list:
        """``submit`` for the event loop: await the results without blocking it."""
        return await asyncio.wrap_future(self.submit(photos, options, per_photo))

    def close(self) -> None:
        """Stop the worker after the call it is running; jobs still waiting fail with ``RuntimeError``."""
        self._queue.put(None)
        self._worker.join()

    def stats(self) -> dict:
        return {"max_batch": self.max_batch, "max_wait_ms": self.max_wait * 1000,
                "calls": sum(self.photos_per_call.values()),
                "photos_per_call": {str(size): count for size, count in sorted(self.photos_per_call.items())}}

    def _serve(self) -> None:
        pending: list[PhotoJob] = []
        stopping = False
        while not stopping or pending:
            if not pending:
                job = self._queue.get()
                if job is None:
                    return
                pending.append(job)
            head = pending[0]
            deadline = head.enqueued + self.max_wait
            while not stopping and self._photos(pending, head.key) < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                else:
                    pending.append(job)
            if stopping:
                for job in pending:
                    if job.future.set_running_or_notify_cancel():
                        job.future.set_exception(RuntimeError("the server is shutting down"))
                return
            batch, count = [], 0
            for job in pending:
                if job.key == head.key and (not batch or count + len(job.photos) <= self.max_batch):
                    batch.append(job)
                    count += len(job.photos)
            pending = [job for job in pending if job not in batch]
            # A client that went away cancelled its future; its photos are not analyzed.
            self._run([job for job in batch if job.future.set_running_or_notify_cancel()])

    @staticmethod
    def _photos(jobs: list[PhotoJob], key: str) -> int:
        return sum(len(job.photos) for job in jobs if job.key == key)

    def _run(self, jobs: list[PhotoJob]) -> None:
        """One pipeline call over the photos of ``jobs`` (equal keys); each job's future gets its photos' results.
        Should the whole call fail, each job is run alone, so one request cannot fail the others."""
        if not jobs:
            return
        photos = [photo for job in jobs for photo in job.photos]
        options = dict(jobs[0].options)
        for name in jobs[0].per_photo:
            options[name] = [value for job in jobs for value in job.per_photo[name]]
        self.photos_per_call[len(photos)] += 1
        try:
            results = self.pipe(photos, **options, detector=self.detector, on_error="return")
        except Exception as error:  # noqa: BLE001 - delivered to the requests (or retried one by one), never lost
            if len(jobs) > 1:
                for job in jobs:
                    self._run([job])
                return
            if not isinstance(error, (FaceAnalysisError, FaceInputError, ValueError, TypeError)):
                logger.exception("pipeline call failed")
            jobs[0].future.set_exception(error)
            return
        start = 0
        for job in jobs:
            job.future.set_result(results[start:start + len(job.photos)])
            start += len(job.photos)


# ---- reading requests --------------------------------------------------------------------------------------------
async def read_request(request: Request, image_fields: tuple[str, ...],
                       max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> tuple[dict, dict]:
    """(image field -> bytes, options) of a multipart or JSON request with exactly ``image_fields`` and an optional
    ``options`` object. Raises ``RequestError`` naming a missing, unknown or malformed field, or 413 for a body
    over ``max_body_bytes`` (one without a Content-Length, which the middleware checks, is measured as read)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    expected = ", ".join([*image_fields, "options"])
    if content_type == "multipart/form-data":
        try:
            form = await request.form()
        except Exception as error:  # noqa: BLE001 - python-multipart's and starlette's parse errors
            raise RequestError(400, f"malformed multipart body: {error}") from error
        try:
            fields = {name: await value.read() if isinstance(value, UploadFile) else value
                      for name, value in form.multi_items()}
        finally:
            await form.close()
        if sum(len(value) for value in fields.values()) > max_body_bytes:
            raise RequestError(413, f"request body exceeds the limit of {max_body_bytes:,} bytes")
        options_text = fields.pop("options", None)
        if isinstance(options_text, bytes):
            options_text = options_text.decode("utf-8", "replace")
        try:
            options = {} if options_text in (None, "") else json.loads(options_text)
        except json.JSONDecodeError as error:
            raise RequestError(400, f"options: not valid JSON ({error})") from error
        images = {}
        for name, value in fields.items():
            if name not in image_fields:
                raise RequestError(422, f"unknown field {name!r}; expected {expected}")
            images[name] = value if isinstance(value, bytes) else _base64_image(value, name)
    elif content_type == "application/json":
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise RequestError(413, f"request body exceeds the limit of {max_body_bytes:,} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError(400, f"body is not valid JSON ({error})") from error
        if not isinstance(body, dict):
            raise RequestError(422, f"the JSON body must be an object with {expected}")
        options = body.pop("options", None)
        options = {} if options is None else options
        images = {}
        for name, value in body.items():
            if name not in image_fields:
                raise RequestError(422, f"unknown field {name!r}; expected {expected}")
            if not isinstance(value, str):
                raise RequestError(422, f"{name}: expected a base64 string or data URI, got {type(value).__name__}")
            images[name] = _base64_image(value, name)
    else:
        raise RequestError(415, f"unsupported content type {content_type or 'none'!r}; send multipart/form-data (image "
                                "files) or application/json (base64 images)")
    if not isinstance(options, dict):
        raise RequestError(422, f"options: expected a JSON object, got {type(options).__name__}")
    missing = [name for name in image_fields if name not in images]
    if missing:
        raise RequestError(422, f"missing field(s) {', '.join(map(repr, missing))}; expected {expected}")
    return images, options


def _base64_image(text: str, name: str) -> bytes:
    """The bytes of a base64 string or ``data:`` URI. URLs and paths are refused: the server reads no files and
    fetches nothing on a client's behalf."""
    if text.startswith(("http://", "https://", "file:")):
        raise RequestError(422, f"{name}: send the image itself (file upload or base64), not a URL or path")
    if text.startswith("data:"):
        text = text.split(",", 1)[1] if "," in text else ""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, f"{name}: not valid base64 ({error})") from error


def decode_image(data: bytes, name: str, max_pixels: int) -> torch.Tensor:
    """The photo's pixels (3, H, W) float in [0, 1]; ``RequestError`` 413 for too many pixels, 415 for data that is
    not an image, 400 for empty, truncated or corrupt images."""
    if not data:
        raise RequestError(400, f"{name}: empty (0 bytes)")
    try:
        return load_image(data, max_pixels=max_pixels)
    except ImageLoadError as error:
        message = f"{name}: {str(error).split(': ', 1)[-1]}"  # the loader names it "image 0"
        status = 413 if isinstance(error, ImageTooLargeError) else 415 if isinstance(error,
                                                                                     UnrecognizedImageError) else 400
        raise RequestError(status, message) from error


def _option_error(error: Exception) -> RequestError:
    """422 with the first line of a validation error (the last line of a strict-dataclass error, which says it)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or [repr(error)]
    line = lines[-1] if isinstance(error, StrictDataclassError) else lines[0]
    return RequestError(422, f"options: {line.removeprefix('TypeError: ')}")


def pipeline_options(pipe: FaceAnalysisPipeline, options: dict, fixed: dict | None = None) -> dict:
    """``options`` validated as the pipeline validates its call options (unknown names, types, values, task names),
    without the server's own (``SERVER_OPTIONS``) and with ``fixed`` ones (set by the endpoint) refused; ``fixed``
    and ``mask_format="rle"`` (unless given) added. Raises ``RequestError`` 422."""
    fixed = fixed or {}
    for name in options:
        if name in SERVER_OPTIONS:
            raise RequestError(422, f"options: {name!r} is set by {SERVER_OPTIONS[name]}; leave it out")
        if name in fixed:
            raise RequestError(422, f"options: {name!r} is set by this endpoint; leave it out")
    if options.get("mask_format", "rle") not in JSON_MASK_FORMATS:
        raise RequestError(422, f"options: mask_format must be one of {list(JSON_MASK_FORMATS)} over HTTP, got "
                                f"{options['mask_format']!r}")
    tasks = options.get("tasks")
    if tasks is not None and not (isinstance(tasks, str) or (
            isinstance(tasks, list) and all(isinstance(name, str) for name in tasks))):
        raise RequestError(422, f"options: tasks must be a task name or a list of them, got {tasks!r}")
    accepted = [name for name in FaceAnalysisOptions.__annotations__
                if name not in SERVER_OPTIONS and name not in fixed]
    options = {"mask_format": "rle", **options, **fixed}
    try:
        # unknown names are listed against what a client may send here, not every pipeline option
        check_options({key: value for key, value in options.items() if key not in fixed}, FaceAnalysisOptions,
                      "face-analysis pipeline", allowed=accepted)
        pipe._sanitize_parameters(**options)
    except (TypeError, ValueError, KeyError, StrictDataclassError) as error:
        raise _option_error(error) from error
    return options


def split_per_photo(options: dict, names: list[str]) -> dict:
    """Take ``PER_PHOTO_OPTIONS`` out of ``options``: name -> one value per photo of ``names`` (one photo: the value
    given; several: a list of one entry per photo)."""
    per_photo = {}
    for option in PER_PHOTO_OPTIONS:
        value = options.pop(option, None)
        if value is None:
            continue
        if len(names) > 1:
            if not isinstance(value, list) or len(value) != len(names):
                raise RequestError(422, f"options: {option} needs one entry per image ({', '.join(names)})")
            per_photo[option] = value
        else:
            per_photo[option] = [value]
    return per_photo


def check_given_faces(pipe: FaceAnalysisPipeline, pixels: list[torch.Tensor], per_photo: dict, names: list[str]):
    """Given face keypoints/boxes are checked against their photos now (shapes, values, boxes inside the photo),
    so that a mistake is this request's 422 and not an error of a shared call."""
    if not per_photo:
        return
    try:
        pipe.image_processor.align(pixels, **per_photo, return_pixel_values=False, return_dense_pixel_values=False)
    except (FaceInputError, ValueError, TypeError) as error:
        message = str(error)
        for index, name in enumerate(names):
            message = message.replace(f"image {index}: ", f"{name}: ", 1)
        raise RequestError(422, message) from error


def photo_result(result, name: str):
    """One photo's pipeline result, or ``RequestError`` 422 for the error it reported."""
    if isinstance(result, dict) and "error" in result:
        raise RequestError(422, f"{name}: {result['error'].split(': ', 1)[-1]}")
    return result


# ---- the application ---------------------------------------------------------------------------------------------
def freeze_loaded_objects() -> int:
    """Exclude every object alive now (the model, torch, transformers: a few hundred thousand) from the cyclic
    garbage collector's full passes (``gc.freeze``); returns how many. A batched call builds large results (a
    parsing mask in RLE is thousands of small lists), which triggers full collections; without this each of them
    walks the whole loaded heap, which made a 32-photo call slower than 32 one-photo calls on a CPU. Call it once,
    after loading the model and before serving (``faceptor-hf serve`` does)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def task_descriptions(config) -> list[dict]:
    """What ``GET /tasks`` lists per task of the model: name, type, readout, input size, outputs, labels."""
    return [{"name": task.name, "type": task.type, "readout": task.readout, "input_size": task.input_size,
             "outputs": task.embedding_size if task.readout == "embedding" else task.num_queries,
             "labels": list(task.labels)} for task in config.tasks]


def create_app(pipe: FaceAnalysisPipeline, *, max_batch: int = DEFAULT_MAX_BATCH,
               max_wait_ms: float = DEFAULT_MAX_WAIT_MS, max_image_pixels: int | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, model_identity: dict | None = None, ui=None) -> FastAPI:
    """The server's FastAPI application over ``pipe`` (see the module docstring).

    ``max_batch``: photos per shared pipeline call (1 analyzes request by request). ``max_wait_ms``: how long the
    oldest waiting request waits for others to share its call. ``max_image_pixels``: larger photos are refused
    with 413 (default, and at most: the image processor's ``max_pixels``). ``max_body_bytes``: larger request
    bodies are refused with 413. ``model_identity``: what ``/health`` reports as the model (default: its
    ``name_or_path``). ``ui``: a ``gradio.Blocks`` mounted at ``/ui``.

    The batching worker starts now and stops when the application shuts down (``app.state.batcher``)."""
    processor_limit = pipe.image_processor.max_pixels
    max_pixels = processor_limit if max_image_pixels is None else min(max_image_pixels, processor_limit)
    batcher = PhotoBatcher(pipe, max_batch=max_batch, max_wait_ms=max_wait_ms)
    config = pipe.model.config
    identity = model_identity or {"model": getattr(config, "name_or_path", None) or type(pipe.model).__name__}
    untrained = bool(getattr(pipe.model, "is_untrained", False) or getattr(config, "untrained", False))

    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="faceptor-hf", summary="Faceptor face analysis", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(FaceAnalysisError)
    async def analysis_error(request: Request, error: FaceAnalysisError):
        return JSONResponse({"error": str(error)}, status_code=422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):
        logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return JSONResponse({"error": f"internal server error ({type(error).__name__}: {error})"}, status_code=500)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return JSONResponse({"error": f"request body of {length} bytes exceeds the limit of {max_body_bytes:,} "
                                          "bytes"},
                                status_code=413)
        return await call_next(request)

    async def decoded(images: dict, names: list[str]) -> list[torch.Tensor]:
        return [await run_in_threadpool(decode_image, images[name], name, max_pixels) for name in names]

    def with_flag(result: dict) -> dict:
        return {**result, "untrained": True} if untrained else result

    @app.post("/analyze")
    async def analyze(request: Request):
        """One photo -> ``{"faces": [...]}``, each face as the pipeline returns it."""
        images, options = await read_request(request, ("image",), max_body_bytes)
        options = pipeline_options(pipe, options)
        per_photo = split_per_photo(options, ["image"])
        pixels = await decoded(images, ["image"])
        await run_in_threadpool(check_given_faces, pipe, pixels, per_photo, ["image"])
        [faces] = await batcher.analyze(pixels, options, per_photo)
        return with_flag({"faces": photo_result(faces, "image")})

    @app.post("/embed")
    async def embed(request: Request):
        """One photo -> ``{"task": name, "faces": [{box, score, keypoints, quality, embedding}]}``."""
        images, options = await read_request(request, ("image",), max_body_bytes)
        task = options.pop("task", None)
        try:
            task = pipe.recognition_task(task)
        except (ValueError, TypeError) as error:
            raise RequestError(422, f"options: task: {error}") from error
        options = pipeline_options(pipe, options, fixed={"tasks": [task]})
        per_photo = split_per_photo(options, ["image"])
        pixels = await decoded(images, ["image"])
        await run_in_threadpool(check_given_faces, pipe, pixels, per_photo, ["image"])
        [faces] = await batcher.analyze(pixels, options, per_photo)
        faces = [{**{key: value for key, value in face.items() if key != "tasks"},
                  "embedding": face["tasks"][task]["embedding"]} for face in photo_result(faces, "image")]
        return with_flag({"task": task, "faces": faces})

    @app.post("/verify")
    async def verify(request: Request):
        """Two photos -> ``{"similarity", "same", "threshold", "faces"}``, as ``pipe.verify`` returns it."""
        names = ["image_a", "image_b"]
        images, options = await read_request(request, tuple(names), max_body_bytes)
        own = {name: options.pop(name) for name in list(VerifyOptions.__annotations__) if name in options}
        try:
            check_options(own, VerifyOptions, "verify")
            check_min_quality(own.get("min_quality"))
            task = pipe.recognition_task(own.get("task"))
        except (TypeError, ValueError, StrictDataclassError) as error:
            raise _option_error(error) from error
        options = pipeline_options(pipe, options, fixed={"tasks": [task], "flip_recognition": own.get("flip", True),
                                                         "max_faces": 1})
        per_photo = split_per_photo(options, names)
        pixels = await decoded(images, names)
        await run_in_threadpool(check_given_faces, pipe, pixels, per_photo, names)
        results = await batcher.analyze(pixels, options, per_photo)
        faces = [photo_result(result, name) for result, name in zip(results, names)]
        try:
            result = pipe.compare_faces(faces, names, task=task, threshold=own.get("threshold", VERIFICATION_THRESHOLD),
                                        min_quality=own.get("min_quality"))
        except FaceAnalysisError as error:
            raise RequestError(422, str(error)) from error
        return with_flag(result)

    @app.get("/tasks")
    async def tasks():
        """The model's tasks: name, type, readout, input size, number of outputs, labels."""
        return {"tasks": task_descriptions(config)}

    @app.get("/health")
    async def health():
        """Status, the model's identity and untrained flag, the device and the batching counts."""
        return {"status": "ok", "model": identity, "untrained": untrained, "device": str(pipe.device),
                "batching": batcher.stats()}

    if ui is not None:
        import gradio

        from .demo import demo_theme

        # Gradio 6 takes the theme at mount time; the demo's theme uses system fonts, so /ui loads offline too.
        app = gradio.mount_gradio_app(app, ui, path="/ui", theme=demo_theme())
    return app


__all__ = ["PhotoBatcher", "RequestError", "SameSizeDetector", "create_app", "decode_image", "freeze_loaded_objects",
           "pipeline_options", "read_request"]
