"""Image processor for Faceptor: aligns every face twice and maps predictions back to the image.

* 112 branch (recognition, age, attributes, expression): 5-point similarity onto the ArcFace 112x112 template,
  pixels x/255 mapped to [-1, 1].
* 512 branch (parsing, landmarks): 5-point similarity onto FaRL's template (the FaRL/facer convention the dense
  heads were trained with), shrunk by ``dense_face_scale`` about the center, pixels x/255 with CLIP mean/std.
  The default 0.9 lies inside the scale ranges both dense training sets saw (landmarks 0.7-0.9, parsing ~1.0).

Faces come as 5 keypoints (preferred; e.g. from a detector), as boxes (a square crop around the box), or not at
all (the whole image is taken as an already aligned face crop). Warps are batched ``grid_sample`` calls on the
requested device, with pixel-index coordinates (pixel centers at integers) throughout.
"""


import difflib
from dataclasses import dataclass, fields
from typing import Callable, Sequence, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import validate_typed_dict
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from .dataset_crops import is_whole_image, row_matrix, warp_image
from .face_alignment import (
    arcface_template,
    box_crop_matrix,
    compose,
    crop_footprint,
    farl_template,
    invert_affine,
    rescale_source_matrix,
    resize_matrix,
    similarity_transform,
    transform_points,
    unwarp_map,
    warp_faces,
)
from .image_loading import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from .tanh_warp import tanh_warp_image
from .task_decoding import MASK_FORMATS, decode_mask, encode_mask, parsing_labels, upsampled_mask_logits
from .task_types import INPUT_SIZE_OF, FaceptorTask, get_task_type, task_from_dict

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class FaceInputError(ValueError):
    """Face boxes or keypoints that cannot be used; the message names the image and face."""


class FaceptorImageProcessorKwargs(TypedDict, total=False):
    """Per-call options of ``FaceptorImageProcessor.preprocess`` / ``__call__`` (anything else is an error).

    face_keypoints: per image (faces, 5, 2) XY points, or None.
    face_boxes: per image (faces, 4) x1, y1, x2, y2, or None.
    return_pixel_values / return_dense_pixel_values: build the 112-px / 512-px crops.
    device: where to warp (e.g. the model's device).
    return_tensors: ``"pt"`` (default) or ``"np"``.
    """

    face_keypoints: object
    face_boxes: object
    return_pixel_values: bool
    return_dense_pixel_values: bool
    device: str | torch.device | None
    return_tensors: str | None


RETURN_TENSORS = ("pt", "np")


def check_options(options: dict, valid: type, where: str, allowed: list[str] | None = None):
    """Raise ``TypeError`` naming unknown keyword options (with the closest valid name) and the valid ones, then
    type-check the known ones. ``allowed``: the names of ``valid`` accepted here (default: all)."""
    names = list(valid.__annotations__) if allowed is None else list(allowed)
    unknown = [key for key in options if key not in names]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, names, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(f"{where} got unknown option(s) {', '.join(hints)}; valid options: {', '.join(names)}")
    validate_typed_dict(valid, options)


def _as_faces(value, name: str, index: int, shape: tuple) -> torch.Tensor | None:
    if value is None:
        return None
    tensor = torch.as_tensor(np.asarray(value, dtype=np.float64) if not isinstance(value, torch.Tensor) else value,
                             dtype=torch.float64)
    if tensor.numel() == 0:
        return tensor.reshape((0,) + shape)
    if tensor.shape == shape:
        tensor = tensor[None]
    if tensor.shape[1:] != shape:
        raise FaceInputError(f"image {index}: {name} must have shape (faces, {', '.join(map(str, shape))}), "
                             f"got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise FaceInputError(f"image {index}: {name} contain NaN or infinite values")
    return tensor


@dataclass
class FaceGeometry:
    """Where the aligned faces of one processor call came from, kept apart from the model inputs:
    what ``post_process_face_analysis`` needs to put predictions back into the photos (F faces of N images).

    affine_matrices / dense_affine_matrices: (F, 2, 3) float64, photo pixels -> 112 / dense crop pixels.
    image_indices: (F,) long, the photo of each face. original_sizes: (N, 2) long, (height, width) per photo.
    face_boxes: (F, 4) float32 x1, y1, x2, y2 and face_keypoints: (F, 5, 2) float32 XY, in photo pixels (given,
    or derived from the crop where only one of them was given). face_scores: (F,) detector confidences, or None.
    numpy arrays instead of tensors with ``return_tensors="np"``.
    """

    affine_matrices: torch.Tensor
    dense_affine_matrices: torch.Tensor
    image_indices: torch.Tensor
    original_sizes: torch.Tensor
    face_boxes: torch.Tensor
    face_keypoints: torch.Tensor
    face_scores: torch.Tensor | None = None

    @property
    def num_faces(self) -> int:
        return len(self.image_indices)

    def numpy(self) -> "FaceGeometry":
        return FaceGeometry(**{field.name: None if getattr(self, field.name) is None
                               else getattr(self, field.name).cpu().numpy() for field in fields(self)})


class FaceptorImageProcessorOutput(BatchFeature):
    """What ``FaceptorImageProcessor`` returns: the model inputs (``pixel_values``, ``dense_pixel_values``;
    ``model(**output)`` works) and, as the ``geometry`` attribute, the ``FaceGeometry`` of their faces."""

    def __init__(self, data: dict, geometry: FaceGeometry):
        super().__init__(data=data, tensor_type=None)
        self.geometry = geometry


class FaceptorImageProcessor(BaseImageProcessor):
    r"""Aligns faces for [`FaceptorModel`] and decodes its outputs in image coordinates.

    Args:
        size, dense_size (`dict`): crop sizes of the two branches (112 and 512).
        image_mean, image_std / dense_image_mean, dense_image_std: per-branch normalization.
        dense_face_scale (`float`): face size in the dense crop relative to FaRL's template.
        box_face_scale (`float`): face size relative to the crop when only a box is known.
        max_image_size (`int`): images whose longer side exceeds this are processed at that size (results are
            still reported in original pixels).
        max_pixels (`int`): larger images are refused before decoding.
    """

    model_input_names = ["pixel_values", "dense_pixel_values"]
    valid_kwargs = FaceptorImageProcessorKwargs

    def __init__(self, size=None, dense_size=None, image_mean=None, image_std=None, dense_image_mean=None,
                 dense_image_std=None, dense_face_scale=0.9, box_face_scale=0.8, max_image_size=4096,
                 max_pixels=DEFAULT_MAX_PIXELS, **kwargs):
        super().__init__(**kwargs)
        small, dense = INPUT_SIZE_OF["pixel_values"], INPUT_SIZE_OF["dense_pixel_values"]
        self.size = size or {"height": small, "width": small}
        self.dense_size = dense_size or {"height": dense, "width": dense}
        self.image_mean = list(image_mean or [0.5, 0.5, 0.5])
        self.image_std = list(image_std or [0.5, 0.5, 0.5])
        self.dense_image_mean = list(dense_image_mean or CLIP_MEAN)
        self.dense_image_std = list(dense_image_std or CLIP_STD)
        self.dense_face_scale = dense_face_scale
        self.box_face_scale = box_face_scale
        self.max_image_size = max_image_size
        self.max_pixels = max_pixels

    # ---- geometry ----------------------------------------------------------------------------------------------
    def face_matrices(self, height: int, width: int, keypoints: torch.Tensor | None, boxes: torch.Tensor | None):
        """(F, 2, 3) image->112 crop and image->dense crop matrices for one image (original pixels)."""
        small = (self.size["height"], self.size["width"])
        dense = (self.dense_size["height"], self.dense_size["width"])
        if keypoints is not None and len(keypoints):
            m112 = similarity_transform(keypoints, arcface_template(small[0]))
            m512 = similarity_transform(keypoints, farl_template(dense[0], self.dense_face_scale))
        elif boxes is not None and len(boxes):
            m112 = box_crop_matrix(boxes, small[0], self.box_face_scale)
            m512 = box_crop_matrix(boxes, dense[0], self.box_face_scale)
        elif keypoints is not None or boxes is not None:  # explicitly no faces
            empty = torch.zeros(0, 2, 3, dtype=torch.float64)
            return empty, empty
        else:
            m112 = resize_matrix(height, width, *small)[None]
            m512 = resize_matrix(height, width, *dense)[None]
        return m112, m512

    # ---- preprocessing -----------------------------------------------------------------------------------------
    def load(self, images) -> list[torch.Tensor]:
        """Decode every image to (3, H, W) float in [0, 1]; raises ``ImageLoadError`` naming the bad one."""
        return [load_image(image, index, self.max_pixels) for index, image in enumerate(images)]

    def __call__(self, images, **kwargs) -> FaceptorImageProcessorOutput:
        return self.preprocess(images, **kwargs)

    def preprocess(self, images, **kwargs) -> FaceptorImageProcessorOutput:
        """Align the faces of one image or a list of images.

        Args:
            images: path, bytes, PIL image, numpy array or torch tensor, or a list of them.
            face_keypoints: per image, (faces, 5, 2) XY points (left eye, right eye, nose, left/right mouth
                corner as seen in the image) or None.
            face_boxes: per image, (faces, 4) x1, y1, x2, y2 or None. Used where keypoints are missing.
            return_pixel_values, return_dense_pixel_values: which crops to build (default both).
            device: where to warp (e.g. the model's device).
            return_tensors: ``"pt"`` (default) or ``"np"``.
            Any other keyword raises ``TypeError`` naming it and the valid options.

        Returns:
            ``FaceptorImageProcessorOutput``: the model inputs ``pixel_values`` (F, 3, 112, 112) and
            ``dense_pixel_values`` (F, 3, 512, 512), and apart from them ``.geometry`` (``FaceGeometry``: affine
            matrices, image indices, original sizes, face boxes and keypoints).
        """
        check_options(kwargs, FaceptorImageProcessorKwargs, "FaceptorImageProcessor")
        face_keypoints, face_boxes = kwargs.get("face_keypoints"), kwargs.get("face_boxes")
        return_tensors = kwargs.get("return_tensors", "pt")
        if return_tensors not in RETURN_TENSORS and return_tensors is not None:
            raise ValueError(f"return_tensors must be one of {list(RETURN_TENSORS)}, got {return_tensors!r}")
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        if not images:
            raise ImageLoadError("no images given")
        keypoints = [face_keypoints] if single and face_keypoints is not None else face_keypoints
        boxes = [face_boxes] if single and face_boxes is not None else face_boxes
        for name, value in (("face_keypoints", keypoints), ("face_boxes", boxes)):
            if value is not None and len(value) != len(images):
                raise FaceInputError(f"{name} has {len(value)} entries for {len(images)} images")
        features = self.align(self.load(images), keypoints, boxes, kwargs.get("return_pixel_values", True),
                              kwargs.get("return_dense_pixel_values", True), kwargs.get("device"))
        if return_tensors == "np":
            return FaceptorImageProcessorOutput({key: value.cpu().numpy() for key, value in features.items()},
                                                features.geometry.numpy())
        return features

    def align(self, pixels: list[torch.Tensor], face_keypoints=None, face_boxes=None, return_pixel_values: bool = True,
              return_dense_pixel_values: bool = True, device=None) -> FaceptorImageProcessorOutput:
        """``preprocess`` for images already decoded by ``load`` ((3, H, W) float in [0, 1]); ``face_keypoints`` and
        ``face_boxes`` are per-image lists here."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        small_size = (self.size["height"], self.size["width"])
        dense_size = (self.dense_size["height"], self.dense_size["width"])
        out = {key: [] for key in ("pixel_values", "dense_pixel_values", "affine_matrices", "dense_affine_matrices",
                                   "image_indices", "face_boxes", "face_keypoints")}
        sizes = []
        for index, image in enumerate(pixels):
            height, width = image.shape[-2:]
            sizes.append((height, width))
            kp = _as_faces(face_keypoints[index] if face_keypoints is not None else None, "face_keypoints", index,
                           (5, 2))
            bx = _as_faces(face_boxes[index] if face_boxes is not None else None, "face_boxes", index, (4,))
            if kp is not None and bx is not None and len(kp) != len(bx):
                raise FaceInputError(f"image {index}: {len(kp)} keypoint sets but {len(bx)} boxes")
            if bx is not None and len(bx):
                self._check_boxes(bx, index, height, width)
            m112, m512 = self.face_matrices(height, width, kp, bx)
            faces = m112.shape[0]
            if faces == 0:
                continue
            work, factor = self._working_image(image.to(device))
            if return_pixel_values:
                crops = warp_faces(work, rescale_source_matrix(m112, factor).to(device), small_size)
                out["pixel_values"].append(self.normalize(crops, "pixel_values"))
            if return_dense_pixel_values:
                crops = warp_faces(work, rescale_source_matrix(m512, factor).to(device), dense_size)
                out["dense_pixel_values"].append(self.normalize(crops, "dense_pixel_values"))
            out["affine_matrices"].append(m112)
            out["dense_affine_matrices"].append(m512)
            out["image_indices"].append(torch.full((faces,), index, dtype=torch.long))
            if bx is None or not len(bx):
                corners = torch.tensor([[-0.5, -0.5], [small_size[1] - 0.5, small_size[0] - 0.5]], dtype=torch.float64)
                bx = transform_points(invert_affine(m112), corners.expand(faces, 2, 2)).reshape(faces, 4)
            if kp is None or not len(kp):
                kp = transform_points(invert_affine(m112), arcface_template(small_size[0]).expand(faces, 5, 2))
            out["face_boxes"].append(bx.float())
            out["face_keypoints"].append(kp.float())
        empty = {"pixel_values": (0, 3) + small_size, "dense_pixel_values": (0, 3) + dense_size,
                 "affine_matrices": (0, 2, 3), "dense_affine_matrices": (0, 2, 3), "image_indices": (0,),
                 "face_boxes": (0, 4), "face_keypoints": (0, 5, 2)}
        stacked = {key: torch.cat(parts) if parts else torch.zeros(
            empty[key], dtype=torch.long if key == "image_indices" else torch.float32) for key, parts in out.items()}
        crops = {key: stacked.pop(key) for key in ("pixel_values", "dense_pixel_values")}
        wanted = {"pixel_values": return_pixel_values, "dense_pixel_values": return_dense_pixel_values}
        model_inputs = {key: crops[key] for key, keep in wanted.items() if keep}
        geometry = FaceGeometry(**stacked, original_sizes=torch.tensor(sizes, dtype=torch.long))
        return FaceptorImageProcessorOutput(model_inputs, geometry)

    def _working_image(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Very large images are resampled to ``max_image_size``; returns the image and original px per pixel."""
        height, width = image.shape[-2:]
        longest = max(height, width)
        if longest <= self.max_image_size:
            return image, 1.0
        factor = longest / self.max_image_size
        size = (max(1, round(height / factor)), max(1, round(width / factor)))
        resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        return resized, width / size[1]

    @staticmethod
    def _check_boxes(boxes: torch.Tensor, index: int, height: int, width: int):
        for face, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            if x2 <= x1 or y2 <= y1:
                raise FaceInputError(f"image {index}, face {face}: box {[x1, y1, x2, y2]} has no area (x2 <= x1 or "
                                     "y2 <= y1)")
            if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
                raise FaceInputError(f"image {index}, face {face}: box {[x1, y1, x2, y2]} lies outside the "
                                     f"{width}x{height} image")

    # ---- post-processing ---------------------------------------------------------------------------------------
    def post_process_face_analysis(self, outputs, inputs: "FaceptorImageProcessorOutput | FaceGeometry", tasks,
                                   mask_format: str = "list", num_images: int | None = None) -> list[list[dict]]:
        """Decode raw model outputs into per-image lists of faces, in original image pixels.

        Args:
            outputs: [`FaceptorOutput`] of the faces in ``inputs``.
            inputs: what this processor returned for those faces (its ``geometry`` is read), or that
                ``FaceGeometry`` itself.
            tasks: the model's config (``model.config``) or its task list (``model.config.tasks``).
            mask_format: parsing masks as ``"list"`` (nested lists, JSON-ready), ``"numpy"`` (uint8 array) or
                ``"rle"`` ({"size": [H, W], "counts": [...]} runs of (value, length) in row-major order).

        Per face: ``box``, ``keypoints``, ``score`` (when detected) and ``tasks``: name -> result with ``type``
        and the fields of that task type (see README "Output format"); ``untrained: True`` when the outputs came
        from random weights.
        """
        if mask_format not in MASK_FORMATS:
            raise ValueError(f"mask_format must be one of {list(MASK_FORMATS)}, got {mask_format!r}")
        by_name = {task.name: task for task in _task_list(tasks)}
        missing = [name for name in outputs.task_logits if name not in by_name]
        if missing:
            raise KeyError(f"outputs hold tasks {missing} that are not in the given task list {list(by_name)}")
        geometry = getattr(inputs, "geometry", inputs)
        indices = geometry.image_indices.tolist()
        sizes = geometry.original_sizes.tolist()
        count = num_images if num_images is not None else len(sizes)
        results: list[list[dict]] = [[] for _ in range(count)]
        landmarks = outputs.landmarks or {}
        decoded = {}
        for name, raw in outputs.task_logits.items():
            task = by_name[name]
            formatted = self._decode_task(task, raw.detach(), geometry, sizes, indices, mask_format,
                                          landmarks.get(name))
            decoded[name] = [{"type": task.type, **result} for result in formatted]
        untrained = bool(getattr(outputs, "untrained", None))
        for face, image_index in enumerate(indices):
            entry = {
                "box": [round(v, 2) for v in geometry.face_boxes[face].tolist()],
                "keypoints": [[round(x, 2), round(y, 2)] for x, y in geometry.face_keypoints[face].tolist()],
                "tasks": {name: values[face] for name, values in decoded.items()},
            }
            if geometry.face_scores is not None:
                entry["score"] = round(float(geometry.face_scores[face]), 4)
            if untrained:
                entry["untrained"] = True
            results[image_index].append(entry)
        return results

    def _decode_task(self, task: FaceptorTask, raw, geometry: FaceGeometry, sizes, indices, mask_format,
                     normalized_points):
        """One task's raw outputs for all faces -> one formatted result per face, in image space."""
        task_type = get_task_type(task)
        dense = task.model_input == "dense_pixel_values"
        size = self.dense_size if dense else self.size
        crop = (size["height"], size["width"])
        matrices = geometry.dense_affine_matrices if dense else geometry.affine_matrices
        if task_type.spatial == "mask":
            # Logits are warped back on their own device (the model's) before the argmax, as the official evaluation
            # does; only the uint8 mask comes back to the CPU.
            masks = [self._image_labels(raw[face], matrices[face], sizes[indices[face]], crop)
                     for face in range(raw.shape[0])]
            return [task_type.to_json(task, {"labels": mask[None]}, mask_format)[0] for mask in masks]
        decoded = task_type.decode(task, raw, crop_size=crop, normalized_points=normalized_points)
        if task_type.spatial == "points":
            crop_points = decoded["points"].double().cpu()
            decoded = dict(decoded, points=transform_points(invert_affine(matrices), crop_points))
        return task_type.to_json(task, decoded, mask_format)

    @staticmethod
    def _image_labels(face_logits, matrix, image_size, crop) -> torch.Tensor:
        """Crop-space logits (C, h, w) -> (H, W) uint8 class mask of the image: upsample to the crop size, warp back
        (bilinear, on logits), argmax; outside the crop is background (0)."""
        height, width = image_size
        mask = torch.zeros((height, width), dtype=torch.uint8)
        region = crop_footprint(matrix, crop, (height, width))
        if region is not None:
            upsampled = upsampled_mask_logits(face_logits[None], crop)[0]
            x0, y0, x1, y1 = region
            restored = unwarp_map(upsampled, matrix.to(upsampled.device), region)
            mask[y0:y1, x0:x1] = parsing_labels(restored).to(torch.uint8).cpu()
        return mask

    # ---- dataset rows ------------------------------------------------------------------------------------------
    # Per model input: the attributes holding its crop size and its normalization statistics.
    ATTRIBUTES_OF_INPUT = {"pixel_values": ("size", "image_mean", "image_std"),
                           "dense_pixel_values": ("dense_size", "dense_image_mean", "dense_image_std")}

    def _input_attributes(self, model_input: str) -> list:
        if model_input not in self.ATTRIBUTES_OF_INPUT:
            raise ValueError(f"model_input must be one of {list(self.ATTRIBUTES_OF_INPUT)}, got {model_input!r}")
        return [getattr(self, name) for name in self.ATTRIBUTES_OF_INPUT[model_input]]

    def crop_size(self, model_input: str) -> int:
        """Side S of the square crops of ``model_input``: ``size`` (112) or ``dense_size`` (512)."""
        size = self._input_attributes(model_input)[0]
        if size["height"] != size["width"]:
            raise ValueError(f"{model_input} crops must be square, the processor's size is {size}")
        return int(size["height"])

    def normalization(self, model_input: str) -> tuple[list[float], list[float]]:
        """(mean, std) per channel of ``model_input``: ``image_mean``/``image_std`` or the dense ones."""
        _, mean, std = self._input_attributes(model_input)
        return mean, std

    def normalize(self, crops: torch.Tensor, model_input: str) -> torch.Tensor:
        """(..., 3, S, S) float crops in [0, 1] -> (crops - mean) / std with the statistics of ``model_input``."""
        mean, std = self.normalization(model_input)
        mean = torch.tensor(mean, dtype=crops.dtype, device=crops.device)[:, None, None]
        std = torch.tensor(std, dtype=crops.dtype, device=crops.device)[:, None, None]
        return (crops - mean) / std

    def crop_row(self, row: dict, model_input: str, *, zoom: float = 1.0, dense_face_scale: float = 1.0,
                 warp_factor: float = 0.0, training_resize: bool = False,
                 crop_transforms: Sequence[torch.Tensor] = (),
                 augment_crop: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model crop of one dataset row, cut as the official training and test pipelines cut it
        (``dataset_crops``: keypoint similarity, official box crop, or the whole image resized; bilinear without
        prefilter, unlike ``preprocess``'s photo crops), then normalized.

        Args:
            row: ``image`` (any image ``load_image`` reads, e.g. a decoded (3, H, W) float tensor in [0, 1]),
                ``face_keypoints`` (5, 2) and ``face_box`` (4,) XY in image pixels, each optional.
            model_input: ``"pixel_values"`` or ``"dense_pixel_values"``; picks the size, template and statistics.
            zoom: box crops shrink about the crop center by this (0.8 for 300W/WFLW/COFW).
            dense_face_scale: FaRL template scale of keypoint crops at 512 px (1.0 as the datasets were trained;
                not the processor's ``dense_face_scale`` for photos).
            warp_factor: FaRL's tanh-warp on top of the crop (LaPa: 0.8; 0 = the plain crop).
            training_resize: an already-cropped image takes the official training resize (``whole_image_matrix``).
            crop_transforms: (2, 3) crop -> crop matrices (augmentations such as a random similarity, a flip)
                composed on top of the row's matrix, in order.
            augment_crop: applied to the (3, S, S) crop in [0, 1] before normalization (photometric augmentation).

        Returns ``(pixels, matrix)``: (3, S, S) normalized crop and the (2, 3) float64 image -> crop matrix
        (``crop_transforms`` included; labels go through it with ``dataset_crops.warp_points`` / ``warp_mask``).
        Raises ``ValueError`` for a box without area or keypoints / box that give no finite crop.
        """
        image = load_image(row["image"], max_pixels=self.max_pixels)
        size = self.crop_size(model_input)
        matrix = row_matrix(row, model_input, tuple(image.shape[-2:]), zoom, dense_face_scale, training_resize, size)
        if not torch.isfinite(matrix).all():
            raise FaceInputError("face_keypoints / face_box give no usable crop (NaN, infinite or degenerate)")
        for transform in crop_transforms:
            matrix = compose(transform, matrix)
        if warp_factor:
            crop = tanh_warp_image(image, matrix, size, warp_factor)
        else:
            crop = warp_image(image, matrix, size, whole_image=is_whole_image(row), training=training_resize)
        if augment_crop is not None:
            crop = augment_crop(crop)
        return self.normalize(crop, model_input), matrix


def _task_list(tasks) -> list[FaceptorTask]:
    """A config, a list of FaceptorTask, or a list of task dicts (older callers) -> list of FaceptorTask."""
    tasks = getattr(tasks, "tasks", tasks)
    # Remote code may load the model's and the processor's files as two module copies, each with its own
    # FaceptorTask class: convert through the dict form rather than trusting isinstance.
    return [task if isinstance(task, FaceptorTask) else task_from_dict(task.to_dict() if hasattr(task, "to_dict")
                                                                       else task) for task in tasks]


__all__ = ["FaceptorImageProcessor", "FaceptorImageProcessorKwargs", "FaceptorImageProcessorOutput", "FaceGeometry",
           "FaceInputError", "CLIP_MEAN", "CLIP_STD", "encode_mask", "decode_mask"]
