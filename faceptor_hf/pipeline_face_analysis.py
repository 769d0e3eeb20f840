"""``pipeline("face-analysis")``: detect, align, analyze and decode every face of one or many photos.

    pipe = pipeline("face-analysis", model="path/to/faceptor", device=0, dtype=torch.bfloat16)
    faces = pipe("photo.jpg")                     # list of faces (JSON-serializable dicts)
    per_image = pipe(["a.jpg", "b.png"], batch_size=64)

Photos are paths, http(s) URLs, ``data:`` URIs, bytes, PIL images, numpy arrays or torch tensors (see
``image_loading``). Faces of all given images share model batches of ``batch_size`` faces. Each face: ``box``
[x1, y1, x2, y2], ``score``, ``keypoints`` (5 x 2) in image pixels and ``tasks`` (task name -> decoded result, see
``FaceptorImageProcessor.post_process_face_analysis``) and ``quality`` (detector score, face size, sharpness, yaw,
roll, visible fraction and a combined score; see ``face_quality``).

    pipe.verify("a.jpg", "b.jpg")                 # {"similarity": 0.71, "same": True, "threshold": ...}
    for record in pipe.video("clip.mp4", every=2):   # {"frame_index", "timestamp", "faces": [... "track_id"]}
        ...

``video`` analyzes a video file (any container PyAV opens; ``pip install "faceptor-hf[video]"``) or an iterable
of frames as a stream, faces of several frames sharing model batches, and follows faces across frames
(``face_tracking``).

A model object works too, e.g. an untrained one to try the code path (its results carry ``"untrained": True``):

    pipe = pipeline("face-analysis", model=FaceptorModel(FaceptorConfig.faceptor_base()))

A folder written by ``faceptor-hf export onnx`` runs detection and Faceptor in ONNX Runtime, with the same
processing and output (``backend="onnxruntime"`` asserts that the folder is one):

    pipe = pipeline("face-analysis", model="path/to/faceptor-onnx")

It is a transformers ``ChunkPipeline``: ``preprocess`` loads, detects and aligns one photo and yields one item per
face (its crops, and the photo's ``FaceGeometry``); ``_forward`` runs a batch of faces, of one or several photos;
``postprocess`` gets all faces of one photo and decodes them into the photo's pixels.
"""


from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypedDict

import torch
from torch.utils.data import DataLoader
from transformers.pipelines.base import ChunkPipeline, no_collate_fn
from transformers.pipelines.pt_utils import PipelineChunkIterator, PipelineIterator, PipelinePackIterator

from .face_alignment import transform_points
from .face_detection import RetinaFaceDetector
from .face_quality import FACE_PART_LABELS, check_min_quality, face_quality, laplacian_variance, passes_quality
from .face_quality import visible_fraction as face_visible_fraction
from .face_tracking import DEFAULT_MAX_GAP, FaceTracker
from .image_loading import ImageLoadError, image_name, load_image
from .image_processing_faceptor import FaceGeometry, FaceInputError, FaceptorImageProcessor, check_options
from .modeling_faceptor import FaceptorOutput
from .task_decoding import embedding_similarity
from .video_frames import VideoFrames


class FaceAnalysisError(ValueError):
    """One input could not be analyzed; ``index`` and ``source`` say which."""

    def __init__(self, message: str, index: int | None = None, source: str | None = None):
        super().__init__(message)
        self.index, self.source = index, source


class FaceAnalysisOptions(TypedDict, total=False):
    """Keyword options of a ``FaceAnalysisPipeline`` call (see the class docstring)."""

    batch_size: int
    tasks: object
    min_face_size: int | float
    max_faces: int | None
    face_keypoints: object
    face_boxes: object
    detector: object
    score_threshold: int | float | None
    mask_format: str
    num_workers: int
    on_error: str
    flip_recognition: bool


CALL_DEFAULTS = {"batch_size": 32, "tasks": None, "min_face_size": 0.0, "max_faces": None, "face_keypoints": None,
                 "face_boxes": None, "detector": None, "score_threshold": None, "mask_format": "list",
                 "num_workers": 4, "on_error": "raise", "flip_recognition": False}

# Which stage reads which call option (transformers' _sanitize_parameters split); batch_size and num_workers go to
# the iterator, face_keypoints / face_boxes travel with their photo.
PREPROCESS_OPTIONS = ("tasks", "min_face_size", "max_faces", "detector", "score_threshold", "on_error")
FORWARD_OPTIONS = ("tasks", "flip_recognition")
POSTPROCESS_OPTIONS = ("tasks", "mask_format")

# Photos decoded ahead (in num_workers threads) and searched for faces in one detector batch: one batch runs faster
# on a GPU than photo by photo, and a call of up to this many photos is detected as one batch, as before the
# pipeline processed photo by photo (batched detection pads photos to a common size, which moves boxes by float
# rounding).
DETECTION_GROUP_SIZE = 64

# Frames of a video analyzed together by ``video``: their faces share model batches, and no more than these are held.
VIDEO_CHUNK_SIZE = 16

# Cosine similarity above which two flip-summed embeddings are called the same person. Squared L2 distance
# between unit vectors is 2 - 2 cos, so 0.3 is distance 1.4, the range of the best 10-fold thresholds that
# CosFace/ArcFace-trained 512-d embeddings reach on LFW-style benchmarks. Calibrate it on your own pairs
# (faceptor_hf evaluation's verification protocol picks the best threshold per fold).
VERIFICATION_THRESHOLD = 0.3


def _requested_device(device):
    """Raise ``ValueError`` when ``device`` asks for CUDA on a machine without it (transformers would silently
    fall back to the CPU for an integer device)."""
    if device is None:
        return
    wants_cuda = (isinstance(device, int) and device >= 0) or (
        isinstance(device, (str, torch.device)) and str(device).startswith("cuda"))
    if wants_cuda and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for a CUDA GPU, but CUDA is not available on this machine; "
                         "use device='cpu' (or -1)")


@dataclass
class PhotoInput:
    """One photo of a call, as ``preprocess`` takes it: the image as given, its position in the call, the faces
    given for it (``faces_given``: the call gave ``face_keypoints`` or ``face_boxes``, so nothing is detected; with
    neither given for this photo, the whole photo is one aligned face), its decoding (a ``Future``, set once it
    started) and the ``DetectionGroup`` it is detected with."""

    index: int
    image: object
    faces_given: bool = False
    face_keypoints: object = None
    face_boxes: object = None
    decoding: Future | None = None
    group: "DetectionGroup | None" = field(default=None, repr=False, compare=False)

    @property
    def source(self) -> str:
        return image_name(self.image, self.index)


@dataclass
class DetectionGroup:
    """Photos whose faces are found in one detector batch, run when the first of them needs its faces;
    ``found`` maps a photo's index to its (keypoints, boxes, scores)."""

    photos: list[PhotoInput]
    found: dict | None = None


@dataclass
class AlignedPhoto:
    """What the face items of one photo share: where it came from and the ``FaceGeometry`` of its faces, or the
    error that stopped it (``on_error="return"``)."""

    index: int
    source: str
    geometry: FaceGeometry | None = None
    error: FaceAnalysisError | None = None


def stack_faces(items: list[dict]) -> dict:
    """DataLoader collate function: the crops of the items that have a face concatenated on their device (faces of
    several photos share the batch), the other fields as lists. (transformers' ``pad_collate_fn`` would copy
    crops other than ``pixel_values`` into CPU buffers.)"""
    batch = {}
    for key in dict.fromkeys(key for item in items for key in item):
        values = [item[key] for item in items if key in item]
        batch[key] = torch.cat(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def _per_item(face_rows: torch.Tensor, has_face: torch.Tensor) -> torch.Tensor:
    """(K, ...) results of the K items that have a face -> (B, ...) for all B items of the batch (zeros for items
    without a face), as transformers' iterators split a batch's outputs by item position."""
    if face_rows.shape[0] == has_face.shape[0]:
        return face_rows
    full = face_rows.new_zeros((has_face.shape[0],) + tuple(face_rows.shape[1:]))
    full[has_face.to(face_rows.device)] = face_rows
    return full


class FaceAnalysisPipeline(ChunkPipeline):
    """Multi-task face analysis with Faceptor. See the module docstring for the output format.

    Call options: ``tasks`` (names to run; default all), ``min_face_size`` (pixels, shorter box side),
    ``max_faces`` (per image, highest detection scores first), ``face_keypoints`` / ``face_boxes`` (per image;
    skip detection), ``detector`` (any callable, see ``faceptor_hf.face_detection``), ``score_threshold``,
    ``mask_format`` ("list", "rle" or "numpy"), ``batch_size`` (faces per model call), ``num_workers`` (decoding
    threads), ``on_error`` ("raise", or "return" to get ``{"error": ...}`` for a failing image and keep the rest),
    ``flip_recognition`` (sum the embeddings of the face and its mirror image before normalizing, as the official
    verification protocol does; one extra 112-px encoder pass).

    Construction options: ``detector`` (the default detector), ``backend`` ("pytorch" or "onnxruntime": raise
    unless the model is of that backend). The model is a ``FaceptorModel`` or any object with its calling
    convention, ``config``, ``device`` and ``dtype``, e.g. ``faceptor_hf.onnx.FaceptorOnnxModel``; a model with a
    ``build_face_detector(device)`` method supplies the default detector.
    """

    # Optional: a model object has no folder to load a processor from; one is then built with default settings.
    _load_image_processor = None
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_processor = False
    _load_video_processor = False

    def __init__(self, *args, detector=None, backend=None, **kwargs):
        _requested_device(kwargs.get("device"))
        model = kwargs.get("model", args[0] if args else None)
        loaded = getattr(model, "backend", "pytorch")
        if backend is not None and backend not in ("pytorch", "onnxruntime"):
            raise ValueError(f"backend must be 'pytorch' or 'onnxruntime', got {backend!r}")
        if backend is not None and backend != loaded:
            source = getattr(model, "name_or_path", None) or type(model).__name__
            raise ValueError(f"backend={backend!r}, but {source} is a {loaded} model; an ONNX Runtime model is a "
                             "folder written by `faceptor-hf export onnx` (backends: 'pytorch', 'onnxruntime')")
        if kwargs.get("image_processor") is None:
            kwargs["image_processor"] = FaceptorImageProcessor()
        super().__init__(*args, **kwargs)
        self._detector = detector

    @property
    def detector(self):
        if self._detector is None:
            # A model may bring its own default detector (the ONNX Runtime model runs the exported detector graph
            # inside RetinaFaceDetector); otherwise the PyTorch RetinaFace is built.
            build = getattr(self.model, "build_face_detector", None)
            self._detector = build(device=self.device) if callable(build) else None
            if self._detector is None:
                self._detector = RetinaFaceDetector(device=self.device)
        return self._detector

    def __call__(self, inputs, **options):
        """Analyze one image (-> list of faces) or a list of images (-> one list of faces, or an error dict, per
        image). Options are keywords (see the class docstring); an unknown one raises ``TypeError`` naming it."""
        check_options(options, FaceAnalysisOptions, "face-analysis pipeline")
        single = not isinstance(inputs, (list, tuple))
        images = [inputs] if single else list(inputs)
        given = {}
        for name in ("face_keypoints", "face_boxes"):
            value = options.pop(name, None)
            value = [value] if single and value is not None else value
            if value is not None and len(value) != len(images):
                raise FaceAnalysisError(f"{name} has {len(value)} entries for {len(images)} images")
            given[name] = value
        faces_given = any(value is not None for value in given.values())
        photos = [PhotoInput(index, image, faces_given,
                             *(value[index] if value is not None else None for value in given.values()))
                  for index, image in enumerate(images)]
        batch_size = options.pop("batch_size", self._batch_size or CALL_DEFAULTS["batch_size"])
        num_workers = options.pop("num_workers", CALL_DEFAULTS["num_workers"] if self._num_workers is None
                                  else self._num_workers)
        if not photos:
            self._sanitize_parameters(**options)  # the same errors for bad options as with photos
            return []
        results = super().__call__(photos, batch_size=batch_size, num_workers=num_workers, **options)
        return results[0] if single else results

    def _sanitize_parameters(self, **options):
        check_options(options, FaceAnalysisOptions, "face-analysis pipeline")
        if options.get("on_error", "raise") not in ("raise", "return"):
            raise ValueError(f"on_error must be 'raise' or 'return', got {options['on_error']!r}")
        if "tasks" in options:
            self._task_list(options["tasks"])  # unknown task names fail before any decoding or detection
        return tuple({key: options[key] for key in names if key in options}
                     for names in (PREPROCESS_OPTIONS, FORWARD_OPTIONS, POSTPROCESS_OPTIONS))

    def get_iterator(self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params,
                     postprocess_params):
        """transformers' ChunkPipeline flow (the DataLoader batches face items of several photos; ``postprocess``
        gets all items of one photo), except that ``num_workers`` threads decode photos ahead instead of DataLoader
        worker processes (``preprocess`` runs the detector and the warps on the model's device), and that crops are
        concatenated where they are (``stack_faces``)."""
        photos = self._read_ahead(inputs, num_workers)
        faces = PipelineChunkIterator(photos, self.preprocess, preprocess_params)
        loader = DataLoader(faces, batch_size=batch_size, collate_fn=no_collate_fn if batch_size == 1 else stack_faces)
        batches = PipelinePackIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(batches, self.postprocess, postprocess_params)

    # ---- stages ------------------------------------------------------------------------------------------------
    def _read_ahead(self, photos: list[PhotoInput], num_workers: int):
        """Yield the photos in order, in ``DetectionGroup``s of up to ``DETECTION_GROUP_SIZE``, each group's photos
        decoding in ``num_workers`` background threads as it starts (``decode`` collects them)."""
        threads = ThreadPoolExecutor(max_workers=num_workers) if len(photos) > 1 and num_workers > 1 else None
        try:
            for start in range(0, len(photos), DETECTION_GROUP_SIZE):
                group = DetectionGroup(photos[start:start + DETECTION_GROUP_SIZE])
                for photo in group.photos:
                    photo.group = group
                    if threads is not None:
                        photo.decoding = threads.submit(load_image, photo.image, photo.index,
                                                        self.image_processor.max_pixels)
                yield from group.photos
        finally:
            if threads is not None:
                threads.shutdown(wait=False, cancel_futures=True)

    def decode(self, photo: PhotoInput) -> torch.Tensor:
        """The photo's pixels, (3, H, W) float in [0, 1], decoded once (by the read-ahead threads, or now). Raises
        ``ImageLoadError``."""
        if photo.decoding is None:
            photo.decoding = Future()
            try:
                photo.decoding.set_result(load_image(photo.image, photo.index, self.image_processor.max_pixels))
            except ImageLoadError as error:
                photo.decoding.set_exception(error)
        return photo.decoding.result()

    def load_images(self, images, num_workers: int) -> list:
        """Decode in background threads; returns per image its pixels (3, H, W) or its ``FaceAnalysisError``."""
        loaded = []
        for photo in self._read_ahead([PhotoInput(index, image) for index, image in enumerate(images)], num_workers):
            try:
                loaded.append(self.decode(photo))
            except ImageLoadError as error:
                loaded.append(FaceAnalysisError(str(error), photo.index, photo.source))
        return loaded

    def detect(self, pixels, detector, score_threshold, min_face_size, max_faces):
        """Per image (keypoints (F, 5, 2), boxes (F, 4), scores (F,)) after size and count filters."""
        detector = detector or self.detector
        previous = getattr(detector, "score_threshold", None)
        if score_threshold is not None and previous is not None:
            detector.score_threshold = score_threshold
        try:
            detections = detector(pixels) if pixels else []
        finally:
            if previous is not None:
                detector.score_threshold = previous
        out = []
        for found in detections:
            boxes = torch.as_tensor(found["boxes"], dtype=torch.float32).reshape(-1, 4)
            keypoints = torch.as_tensor(found["keypoints"], dtype=torch.float32).reshape(-1, 5, 2)
            scores = torch.as_tensor(found.get("scores", torch.ones(len(boxes))), dtype=torch.float32).reshape(-1)
            sides = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            keep = (sides >= min_face_size).nonzero().flatten()
            keep = keep[scores[keep].argsort(descending=True)]
            if max_faces is not None:
                keep = keep[:max_faces]
            out.append((keypoints[keep], boxes[keep], scores[keep]))
        return out

    def detected_faces(self, photo: PhotoInput, detector, score_threshold, min_face_size, max_faces):
        """The photo's (keypoints, boxes, scores), from one ``detect`` call over the decodable photos of its group
        (run by the first of them that asks)."""
        group = photo.group or DetectionGroup([photo])
        if group.found is None:
            decoded = {}
            for member in group.photos:
                try:
                    decoded[member.index] = self.decode(member)
                except ImageLoadError:
                    continue  # reported by its own preprocess
            found = self.detect(list(decoded.values()), detector, score_threshold, min_face_size, max_faces)
            group.found = dict(zip(decoded, found))
        return group.found.pop(photo.index)

    def preprocess(self, photo: PhotoInput, tasks=None, min_face_size=CALL_DEFAULTS["min_face_size"],
                   max_faces=None, detector=None, score_threshold=None, on_error=CALL_DEFAULTS["on_error"]):
        """Load, detect (unless the faces are given) and align one photo. Yields one item per face: its crops
        (``pixel_values`` (1, 3, 112, 112) and/or ``dense_pixel_values`` (1, 3, 512, 512), as the tasks need, on
        the model's device), ``has_face`` (1,), the ``AlignedPhoto`` shared by the photo's items, and ``is_last``.
        A photo without faces, or one that fails with ``on_error="return"``, yields one item without crops."""
        selected = self._task_list(tasks)
        try:
            pixels = self.decode(photo)
        except ImageLoadError as error:
            yield self._failed(photo, FaceAnalysisError(str(error), photo.index, photo.source), on_error)
            return
        keypoints, boxes, scores = photo.face_keypoints, photo.face_boxes, None
        if not photo.faces_given:
            keypoints, boxes, scores = self.detected_faces(photo, detector, score_threshold, min_face_size, max_faces)
        try:
            aligned = self.image_processor.align(
                [pixels], face_keypoints=None if keypoints is None else [keypoints],
                face_boxes=None if boxes is None else [boxes],
                return_pixel_values=any(task.model_input == "pixel_values" for task in selected),
                return_dense_pixel_values=any(task.model_input == "dense_pixel_values" for task in selected),
                device=self.device)
        except (FaceInputError, ImageLoadError) as error:
            failure = FaceAnalysisError(f"{photo.source}: {error}", photo.index, photo.source)
            yield self._failed(photo, failure, on_error, cause=error)
            return
        geometry = aligned.geometry
        geometry.face_scores = scores
        shared = AlignedPhoto(photo.index, photo.source, geometry)
        count = geometry.num_faces
        if count == 0:
            yield {"is_last": True, "has_face": torch.zeros(1, dtype=torch.bool), "photo": shared}
        for face in range(count):
            yield {"is_last": face == count - 1, "has_face": torch.ones(1, dtype=torch.bool), "photo": shared,
                   **{key: crops[face:face + 1] for key, crops in aligned.items()}}

    @staticmethod
    def _failed(photo: PhotoInput, failure: FaceAnalysisError, on_error: str, cause: Exception | None = None) -> dict:
        if on_error == "raise":
            raise failure from cause
        return {"is_last": True, "has_face": torch.zeros(1, dtype=torch.bool),
                "photo": AlignedPhoto(photo.index, photo.source, error=failure)}

    def forward(self, model_inputs, **forward_params):
        # Unlike the base class, the outputs stay on the model's device: postprocess warps the parsing logits back
        # onto the photo there, and only the uint8 masks come to the CPU.
        with self.device_placement(), torch.inference_mode():
            return self._forward(model_inputs, **forward_params)

    def _forward(self, batch: dict, tasks=None, flip_recognition: bool = False) -> dict:
        """One model pass per input over the faces of the batch (each encoder input once). Returns per item:
        ``is_last``, ``photo`` and, for the faces, ``task_logits/<task>`` and ``landmarks/<task>`` rows."""
        out = {"is_last": batch["is_last"], "photo": batch["photo"]}
        small, dense = batch.get("pixel_values"), batch.get("dense_pixel_values")
        if small is None and dense is None:
            return out  # no face among these items
        selected = self._task_list(tasks)
        dtype = self.model.dtype  # a PreTrainedModel's parameter dtype, or an ONNX Runtime model's graph dtype
        outputs = self.model(pixel_values=None if small is None else small.to(self.device, dtype),
                             dense_pixel_values=None if dense is None else dense.to(self.device, dtype),
                             tasks=[task.name for task in selected])
        recognition = [task.name for task in selected if task.readout == "embedding"]
        if flip_recognition and recognition:
            # official verification protocol: embedding(face) + embedding(mirrored face), then normalize
            mirrored = self.model(pixel_values=small.flip(-1).to(self.device, dtype), tasks=recognition)
            for name in recognition:
                outputs.task_logits[name] = outputs.task_logits[name] + mirrored.task_logits[name]
        has_face = batch["has_face"]
        out["quality/sharpness"] = _per_item(self._crop_sharpness(small, dense), has_face)
        for name, logits in outputs.task_logits.items():
            out[f"task_logits/{name}"] = _per_item(logits, has_face)
        for name, points in (outputs.landmarks or {}).items():
            out[f"landmarks/{name}"] = _per_item(points, has_face)
        return out

    def postprocess(self, face_outputs: list[dict], tasks=None, mask_format: str = CALL_DEFAULTS["mask_format"]):
        """All items of one photo -> its list of faces (``post_process_face_analysis``), or its error dict."""
        photo = face_outputs[0]["photo"]
        if photo.error is not None:
            return {"error": str(photo.error), "input": photo.error.source}
        if photo.geometry.num_faces == 0:
            return []
        fields = {"task_logits": {}, "landmarks": {}, "quality": {}}
        for key in face_outputs[0]:
            if "/" in key:
                field, name = key.split("/", 1)
                fields[field][name] = torch.cat([output[key] for output in face_outputs])
        outputs = FaceptorOutput(task_logits=fields["task_logits"], landmarks=fields["landmarks"] or None,
                                 untrained=True if getattr(self.model, "is_untrained", False) else None)
        faces = self.image_processor.post_process_face_analysis(outputs, photo.geometry, self._task_list(tasks),
                                                                mask_format)[0]
        qualities = face_quality(photo.geometry.face_boxes, photo.geometry.face_keypoints,
                                 photo.geometry.face_scores, fields["quality"]["sharpness"],
                                 self._visible_fraction(outputs.task_logits, photo.geometry, tasks))
        for face, quality in zip(faces, qualities):
            face["quality"] = quality
        return faces

    def _crop_sharpness(self, small: torch.Tensor | None, dense: torch.Tensor | None) -> torch.Tensor:
        """(K,) ``laplacian_variance`` of the K faces' 112-px crops, in [0, 1] intensities (the dense crop
        area-resized to 112 px when only dense tasks ran)."""
        model_input, crops = ("pixel_values", small) if small is not None else ("dense_pixel_values", dense)
        mean, std = (torch.tensor(values, device=crops.device, dtype=torch.float32).view(1, -1, 1, 1)
                     for values in self.image_processor.normalization(model_input))
        pixels = (crops.float() * std + mean).clamp(0, 1)
        if model_input == "dense_pixel_values":
            pixels = torch.nn.functional.interpolate(pixels, size=(112, 112), mode="area")
        return laplacian_variance(pixels)

    def _visible_fraction(self, task_logits: dict, geometry: FaceGeometry, tasks) -> torch.Tensor | None:
        """(F,) ``face_quality.visible_fraction`` from the first mask task whose labels name face parts, in its
        crop; None when no such task ran."""
        for task in self._task_list(tasks):
            face_part = torch.tensor([label in FACE_PART_LABELS for label in task.labels])
            if task.name not in task_logits or task.task_type.spatial != "mask" or not face_part.any():
                continue
            logits = task_logits[task.name]
            crop = self.image_processor.crop_size(task.model_input)
            matrices = (geometry.dense_affine_matrices if task.model_input == "dense_pixel_values"
                        else geometry.affine_matrices)
            points = transform_points(matrices.cpu(), geometry.face_keypoints.to(torch.float64).cpu())
            points = points * (logits.shape[-1] / crop)
            return face_visible_fraction(logits.argmax(1).cpu(), face_part, points)
        return None

    def _task_list(self, tasks):
        config = self.model.config
        if tasks is None:
            return [t for t in config.tasks]
        return [config.get_task(name) for name in ([tasks] if isinstance(tasks, str) else tasks)]

    def recognition_task(self, task: str | None = None) -> str:
        """The name of the face-recognition (embedding) task to use: ``task`` checked, or the model's first one.
        Raises ``ValueError`` when the model has none or ``task`` is not one."""
        config = self.model.config
        recognition = [t.name for t in config.tasks if t.readout == "embedding"]
        if task is None:
            if not recognition:
                raise ValueError(f"this model has no face-recognition task (tasks: {config.task_names})")
            return recognition[0]
        if task not in recognition:
            raise ValueError(f"task {task!r} is not a face-recognition (embedding) task; those are {recognition}")
        return task

    def verify(self, image_a, image_b, *, threshold: float = VERIFICATION_THRESHOLD, task: str | None = None,
               flip: bool = True, min_quality=None, **options) -> dict:
        """Are the faces of two photos the same person?

        Uses the most confident face of each photo (or the given ``face_keypoints``/``face_boxes`` per photo in
        ``options``) and the official verification protocol: embedding(face) + embedding(mirrored face), L2
        normalized (``flip=False`` skips the mirror pass). Returns ``{"similarity": cosine in [-1, 1], "same":
        similarity >= threshold, "threshold": threshold, "faces": [face_a, face_b]}``; raises
        ``FaceAnalysisError`` naming the photo that has no face, or whose face fails ``min_quality`` (a combined
        quality score in [0, 1] or a dict of named thresholds, see ``face_quality.passes_quality``).
        """
        check_min_quality(min_quality)
        task = self.recognition_task(task)
        faces = self([image_a, image_b], **{**options, "tasks": [task], "flip_recognition": flip, "max_faces": 1})
        sources = [image_name(image, index) for index, image in enumerate((image_a, image_b))]
        return self.compare_faces(faces, sources, task=task, threshold=threshold, min_quality=min_quality)

    def compare_faces(self, faces: list, sources: list[str], *, task: str, threshold: float = VERIFICATION_THRESHOLD,
                      min_quality=None) -> dict:
        """``verify``'s verdict on two analyzed photos: ``faces`` is what ``self([a, b], tasks=[task], max_faces=1,
        ...)`` returned (the first face of each is used), ``sources`` name the photos in errors. Raises
        ``FaceAnalysisError`` for a photo without a face or below ``min_quality``."""
        for index, found in enumerate(faces):
            if not found:
                raise FaceAnalysisError(f"{sources[index]}: no face found to verify", index, sources[index])
            if not passes_quality(found[0].get("quality"), min_quality):
                raise FaceAnalysisError(f"{sources[index]}: face quality {found[0]['quality']} is below "
                                        f"min_quality={min_quality!r}", index, sources[index])
        embeddings = [torch.tensor(found[0]["tasks"][task]["embedding"]) for found in faces]
        similarity = float(embedding_similarity(embeddings[0], embeddings[1]))
        result = {"similarity": round(similarity, 6), "same": similarity >= threshold, "threshold": threshold,
                  "faces": [faces[0][0], faces[1][0]]}
        if getattr(self.model, "is_untrained", False):
            result["untrained"] = True
        return result

    def video(self, source, *, every: int = 1, track: bool = True, tasks=None, start_frame: int = 0,
              max_gap: int = DEFAULT_MAX_GAP, batch_size: int | None = None, chunk_size: int = VIDEO_CHUNK_SIZE,
              fps: float | None = None, tracker: FaceTracker | None = None, **options):
        """Analyze a video frame by frame; returns an iterator of one record per analyzed frame:
        ``{"frame_index": int, "timestamp": seconds, "faces": [face as a photo gives it, plus "track_id"]}`` (a frame
        that fails with ``on_error="return"`` has ``"error"`` and no faces).

        ``source``: a video path or file object (any container PyAV opens), a ``video_frames.VideoFrames``, or an
        iterable of frames (PIL images, numpy arrays, tensors) with ``fps`` for their timestamps. Frames stream:
        ``chunk_size`` of them are decoded and analyzed together, their faces in model batches of ``batch_size``.
        ``every``: analyze frames 0, every, 2 * every, ...; ``start_frame``: skip the frames before it (a resumed
        run). ``track``: give every face a ``track_id`` (``face_tracking.FaceTracker``; ``max_gap`` analyzed frames
        unseen end a track; ``tracker``: continue this tracker's tracks instead of starting new ones). The other
        options are the photo call's (``tasks``, ``min_face_size``, ``mask_format``, ...), except
        ``face_keypoints`` / ``face_boxes``. Raises ``ImportError`` naming the ``video`` extra without PyAV (video
        files) or scipy (tracking), ``video_frames.VideoReadError`` for a source that cannot be read.
        """
        for name in ("face_keypoints", "face_boxes"):
            if name in options:
                raise TypeError(f"video() takes no {name}: faces are detected in every frame")
        check_options(options, FaceAnalysisOptions, "face-analysis pipeline video")
        self._sanitize_parameters(tasks=tasks, **options)  # bad options fail before any frame is decoded
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a whole number of frames >= 1, got {chunk_size!r}")
        frames = source if isinstance(source, VideoFrames) else VideoFrames(source, fps=fps)
        if track and tracker is None:
            recognition = [task.name for task in self._task_list(tasks) if task.readout == "embedding"]
            tracker = FaceTracker(max_gap=max_gap, embedding_task=recognition[0] if recognition else None)
        call = {**options, "tasks": tasks}
        if batch_size is not None:
            call["batch_size"] = batch_size
        return self._video_records(frames.read(every=every, start_frame=start_frame), tracker if track else None,
                                   chunk_size, call)

    def _video_records(self, frames, tracker: FaceTracker | None, chunk_size: int, call: dict):
        """One record per frame of ``frames``, analyzed ``chunk_size`` at a time (see ``video``)."""
        chunk = []
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == chunk_size:
                yield from self._video_chunk(chunk, tracker, call)
                chunk = []
        if chunk:
            yield from self._video_chunk(chunk, tracker, call)

    def _video_chunk(self, chunk: list, tracker: FaceTracker | None, call: dict):
        results = self([frame.image for frame in chunk], **call)
        for frame, faces in zip(chunk, results):
            record = {"frame_index": frame.index, "timestamp": frame.timestamp, "faces": []}
            if isinstance(faces, dict):  # on_error="return": this frame failed; tracks carry on without it
                # the pipeline numbers images within the chunk; the frame index says which frame it was
                record["error"] = f"frame {frame.index}: {faces['error']}"
                faces = []
            if tracker is not None:
                tracker.update(frame.index, faces)
            record["faces"] = faces
            yield record
