"""``pipeline("face-analysis")``: detect, align, analyse and decode every face of one or many photos.

    pipe = pipeline("face-analysis", model="path/to/faceptor", device=0, dtype=torch.bfloat16)
    faces = pipe("photo.jpg")                     # list of faces (JSON-serialisable dicts)
    per_image = pipe(["a.jpg", "b.png"], batch_size=64)

Faces of all given images share model batches of ``batch_size`` faces. Each face: ``box`` [x1, y1, x2, y2],
``score``, ``keypoints`` (5 x 2) in image pixels and ``tasks`` (task name -> decoded result, see
``FaceptorImageProcessor.post_process_face_analysis``).

    pipe.verify("a.jpg", "b.jpg")                 # {"similarity": 0.71, "same": True, "threshold": ...}

A model object works too, e.g. an untrained one to try the code path (its results carry ``"untrained": True``):

    pipe = pipeline("face-analysis", model=FaceptorModel(FaceptorConfig.faceptor_base()))

A folder written by ``faceptor-hf export onnx`` runs detection and Faceptor in ONNX Runtime, with the same
processing and output (``backend="onnxruntime"`` asserts that the folder is one):

    pipe = pipeline("face-analysis", model="path/to/faceptor-onnx")
"""


import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypedDict

import torch
from transformers import Pipeline

from .face_detection import RetinaFaceDetector
from .image_loading import ImageLoadError, load_image
from .image_processing_faceptor import FaceInputError, FaceptorImageProcessor, check_options
from .task_decoding import embedding_similarity


class FaceAnalysisError(ValueError):
    """One input could not be analysed; ``index`` and ``source`` say which."""

    def __init__(self, message: str, index: int | None = None, source: str | None = None):
        super().__init__(message)
        self.index, self.source = index, source


def _source_name(image, index: int) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else f"image {index}"


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


class FaceAnalysisPipeline(Pipeline):
    """Multi-task face analysis with Faceptor. See the module docstring for the output format.

    Call options: ``tasks`` (names to run; default all), ``min_face_size`` (pixels, shorter box side),
    ``max_faces`` (per image, highest detection scores first), ``face_keypoints`` / ``face_boxes`` (per image;
    skip detection), ``detector`` (any callable, see ``faceptor_hf.face_detection``), ``score_threshold``,
    ``mask_format`` ("list", "rle" or "numpy"), ``batch_size`` (faces per model call), ``num_workers`` (decoding
    threads), ``on_error`` ("raise", or "return" to get ``{"error": ...}`` for a failing image and keep the rest),
    ``flip_recognition`` (sum the embeddings of the face and its mirror image before normalising, as the official
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
        self.stage_seconds = {"decode": 0.0, "detect": 0.0, "align": 0.0, "analyse": 0.0, "postprocess": 0.0}

    @contextmanager
    def _stage(self, name: str):
        """Accumulate wall time per stage in ``stage_seconds`` (device-synchronised, for benchmarks)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stage_seconds[name] += time.perf_counter() - start

    def _sanitize_parameters(self, **kwargs):
        check_options(kwargs, FaceAnalysisOptions, "face-analysis pipeline")
        return {}, {}, kwargs

    # transformers' Pipeline requires these per-item hooks; __call__ below replaces the per-item flow so that the
    # faces of many images share model batches, and never calls them.
    def preprocess(self, inputs, **kwargs):
        return inputs

    def _forward(self, model_inputs, **kwargs):
        return model_inputs

    def postprocess(self, model_outputs, **kwargs):
        return model_outputs

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
        """Analyse one image (-> list of faces) or a list of images (-> one list of faces, or an error dict, per
        image). Options are keywords (see the class docstring); an unknown one raises ``TypeError`` naming it."""
        check_options(options, FaceAnalysisOptions, "face-analysis pipeline")
        options = {**CALL_DEFAULTS, **self._postprocess_params, **options}
        if options["on_error"] not in ("raise", "return"):
            raise ValueError(f"on_error must be 'raise' or 'return', got {options['on_error']!r}")
        single = not isinstance(inputs, (list, tuple))
        images = [inputs] if single else list(inputs)
        keypoints, boxes = options["face_keypoints"], options["face_boxes"]
        keypoints = [keypoints] if single and keypoints is not None else keypoints
        boxes = [boxes] if single and boxes is not None else boxes
        results = self.analyse(images, options["batch_size"], options["tasks"], options["min_face_size"],
                               options["max_faces"], keypoints, boxes, options["detector"], options["score_threshold"],
                               options["mask_format"], options["num_workers"], options["on_error"],
                               options["flip_recognition"])
        return results[0] if single else results

    def verify(self, image_a, image_b, *, threshold: float = VERIFICATION_THRESHOLD, task: str | None = None,
               flip: bool = True, **options) -> dict:
        """Are the faces of two photos the same person?

        Uses the most confident face of each photo (or the given ``face_keypoints``/``face_boxes`` per photo in
        ``options``) and the official verification protocol: embedding(face) + embedding(mirrored face), L2
        normalised (``flip=False`` skips the mirror pass). Returns ``{"similarity": cosine in [-1, 1], "same":
        similarity >= threshold, "threshold": threshold, "faces": [face_a, face_b]}``; raises
        ``FaceAnalysisError`` naming the photo that has no face.
        """
        config = self.model.config
        recognition = [t.name for t in config.tasks if t.readout == "embedding"]
        if task is None:
            if not recognition:
                raise ValueError(f"this model has no face-recognition task (tasks: {config.task_names})")
            task = recognition[0]
        elif task not in recognition:
            raise ValueError(f"task {task!r} is not a face-recognition (embedding) task; those are {recognition}")
        faces = self([image_a, image_b], **{**options, "tasks": [task], "flip_recognition": flip, "max_faces": 1})
        for index, found in enumerate(faces):
            if not found:
                source = _source_name((image_a, image_b)[index], index)
                raise FaceAnalysisError(f"{source}: no face found to verify", index, source)
        embeddings = [torch.tensor(found[0]["tasks"][task]["embedding"]) for found in faces]
        similarity = float(embedding_similarity(embeddings[0], embeddings[1]))
        result = {"similarity": round(similarity, 6), "same": similarity >= threshold, "threshold": threshold,
                  "faces": [faces[0][0], faces[1][0]]}
        if getattr(self.model, "is_untrained", False):
            result["untrained"] = True
        return result

    # ---- stages ------------------------------------------------------------------------------------------------
    def load_images(self, images, num_workers: int):
        """Decode in background threads; returns tensors or the exception per image."""
        processor = self.image_processor

        def load(item):
            index, image = item
            try:
                return load_image(image, index, processor.max_pixels)
            except ImageLoadError as error:
                return FaceAnalysisError(str(error), index, _source_name(image, index))

        if len(images) == 1 or num_workers <= 1:
            return [load(item) for item in enumerate(images)]
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            return list(pool.map(load, enumerate(images)))

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

    def analyse(self, images, batch_size, tasks, min_face_size, max_faces, keypoints, boxes, detector,
                score_threshold, mask_format, num_workers, on_error, flip_recognition=False):
        processor = self.image_processor
        selected = self._task_list(tasks)  # unknown task names fail before any decoding or detection
        for name, value in (("face_keypoints", keypoints), ("face_boxes", boxes)):
            if value is not None and len(value) != len(images):
                raise FaceAnalysisError(f"{name} has {len(value)} entries for {len(images)} images")
        with self._stage("decode"):
            loaded = self.load_images(images, num_workers)
        failures = {i: item for i, item in enumerate(loaded) if isinstance(item, Exception)}
        good = [i for i in range(len(images)) if i not in failures]
        if failures and on_error == "raise":
            raise next(iter(failures.values()))
        given = keypoints is not None or boxes is not None
        if given:
            faces = {i: (keypoints[i] if keypoints is not None else None, boxes[i] if boxes is not None else None,
                         None) for i in good}
        else:
            with self._stage("detect"):
                detected = self.detect([loaded[i] for i in good], detector, score_threshold, min_face_size, max_faces)
            faces = dict(zip(good, detected))
        # Align every face of every image, then run the model over face batches shared by all images.
        aligned = {}
        for i in good:
            kp, bx, scores = faces[i]
            try:
                with self._stage("align"):
                    feature = processor.align(
                        [loaded[i]], face_keypoints=[kp] if kp is not None else None,
                        face_boxes=[bx] if bx is not None else None, device=self.device)
            except (FaceInputError, ImageLoadError) as error:
                failure = FaceAnalysisError(f"{_source_name(images[i], i)}: {error}", i, _source_name(images[i], i))
                if on_error == "raise":
                    raise failure from error
                failures[i] = failure
                continue
            if scores is not None:
                feature["face_scores"] = scores
            aligned[i] = feature
        results: list = [[] for _ in images]
        order = [i for i in good if i in aligned]
        self._run_batches(order, aligned, selected, batch_size, mask_format, results, flip_recognition)
        for i, failure in failures.items():
            results[i] = {"error": str(failure), "input": failure.source or _source_name(images[i], i)}
        return results

    def _task_list(self, tasks):
        config = self.model.config
        if tasks is None:
            return [t for t in config.tasks]
        return [config.get_task(name) for name in ([tasks] if isinstance(tasks, str) else tasks)]

    def _run_batches(self, order, aligned, selected, batch_size, mask_format, results, flip_recognition=False):
        model = self.model
        names = [t.name for t in selected]
        needs_small = any(t.model_input == "pixel_values" for t in selected)
        needs_dense = any(t.model_input == "dense_pixel_values" for t in selected)
        dtype = model.dtype  # a PreTrainedModel's parameter dtype, or an ONNX Runtime model's graph dtype
        # Flatten faces across images, keeping (image, face) ownership.
        owners = [(i, f) for i in order for f in range(aligned[i]["image_indices"].shape[0])]
        for start in range(0, len(owners), max(1, batch_size)):
            chunk = owners[start:start + batch_size]
            small = torch.stack([aligned[i]["pixel_values"][f] for i, f in chunk]) if needs_small else None
            dense = torch.stack([aligned[i]["dense_pixel_values"][f] for i, f in chunk]) if needs_dense else None
            with self._stage("analyse"), torch.inference_mode():
                outputs = model(
                    pixel_values=None if small is None else small.to(self.device, dtype),
                    dense_pixel_values=None if dense is None else dense.to(self.device, dtype), tasks=names)
                recognition = [t.name for t in selected if t.readout == "embedding"]
                if flip_recognition and recognition:
                    # official verification protocol: embedding(face) + embedding(mirrored face), then normalise
                    mirrored = model(pixel_values=small.flip(-1).to(self.device, dtype), tasks=recognition)
                    for name in recognition:
                        outputs.task_logits[name] = outputs.task_logits[name] + mirrored.task_logits[name]
            # Decode face by face against its own image's metadata.
            with self._stage("postprocess"):
                self._decode_chunk(outputs, chunk, aligned, selected, mask_format, results)

    def _decode_chunk(self, outputs, chunk, aligned, selected, mask_format, results):
        """Decode a batch of faces from several images at once: each face becomes its own "image" entry carrying
        its image's size, so one post-processing call serves the whole batch."""
        meta = {key: torch.stack([aligned[i][key][f] for i, f in chunk])
                for key in ("affine_matrices", "dense_affine_matrices", "face_boxes", "face_keypoints")}
        meta["image_indices"] = torch.arange(len(chunk))
        meta["original_sizes"] = torch.stack([aligned[i]["original_sizes"][0] for i, _ in chunk])
        if all("face_scores" in aligned[i] for i, _ in chunk):
            meta["face_scores"] = torch.stack([aligned[i]["face_scores"][f] for i, f in chunk])
        decoded = self.image_processor.post_process_face_analysis(outputs, meta, selected, mask_format)
        for (i, _), faces in zip(chunk, decoded):
            results[i].extend(faces)
