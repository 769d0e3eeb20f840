"""The paper's test-time protocol of every dataset: ONE table keyed by native dataset name (``NATIVE_DATASETS``).

A protocol says which split(s) are scored, which model task is evaluated, how a row becomes the model's crop
(``dataset_crops.row_matrix``: the box-crop zoom, the 512-px template scale, and LaPa's tanh-warp), the metric's
options (NME normalizers and their points, FR/AUC threshold, parsing background) and the paper's figures
(docs/datasets-and-evaluation.md §7) for Faceptor-Base (``compare.png``) and Faceptor-Full (``dense.png``,
``attribute.png``, ``identity.png``).

    protocol = get_protocol("300w")             # or the protocol of a model task with default options:
    protocol = default_protocol("align_mine")

A dataset converter registered under another name finds its protocol through its official task (``NativeDataset.task``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperFigure:
    """One figure of the paper's tables.

    Attributes:
        metric: key of the evaluation's metrics (e.g. ``nme_inter_ocular``).
        label: the column as the paper names it.
        scale: ours x scale is on the paper's scale (NME and F1 are fractions here, x 100 in the paper).
        base, full: Faceptor-Base and Faceptor-Full figures (None where the paper has none).
    """

    metric: str
    label: str
    scale: float = 1.0
    base: float | None = None
    full: float | None = None


@dataclass(frozen=True)
class Protocol:
    """How one dataset is scored.

    Attributes:
        name: the native dataset name (registry key), or a model task name for a default protocol.
        task: the model task it evaluates (an official task; ``evaluate(task=...)`` overrides it when a model
            names its task differently).
        splits: the test splits the paper reports, in its order.
        crop: the crop rule in words (printed in README's table).
        zoom: box crops shrink about the crop center by this (0.8 for 300W/WFLW/COFW, 1.0 for AFLW-19).
        dense_face_scale: scale of FaRL's 5-point template for keypoint crops at 512 px (1.0 as LaPa trains).
        warp_factor: tanh-warp on top of the crop (0.8 for LaPa, docs/datasets-and-evaluation.md §2.4; 0 = plain crop).
        score_size: parsing is scored on a score_size x score_size frame (the target mask resized there, nearest);
            None = the mask's own size (CelebAMask-HQ: 512, the official resize of its 1024 images).
        flip_sum: add the model's raw output for the mirrored crop (verification's flip-sum); None = the task type
            metric's own default.
        metric_options: keyword options of the task type's metric (see ``task_metrics``).
        paper: split -> the paper's figures for it.
        notes: protocol choices and deviations, in words.
    """

    name: str
    task: str
    splits: tuple[str, ...] = ()
    crop: str = "the common schema's rule: 5 keypoints, else face box, else the whole image"
    zoom: float = 1.0
    dense_face_scale: float = 1.0
    warp_factor: float = 0.0
    score_size: int | None = None
    flip_sum: bool | None = None
    metric_options: dict = field(default_factory=dict)
    paper: dict[str, tuple[PaperFigure, ...]] = field(default_factory=dict)
    notes: str = ""


def _nme(base, full, label="NME inter-ocular x100", metric="nme_inter_ocular"):
    return (PaperFigure(metric, label, 100.0, base, full),)


_BOX_ZOOM = ("face_box crop (docs/datasets-and-evaluation.md §2.1), zoom {zoom} about the center; points mapped back "
             "through the inverse")
_VERIFICATION_NOTE = ("flip-sum embeddings, L2-normalized; squared L2 distances; 10 folds (the fold column, contiguous "
                      "blocks as sklearn's KFold); threshold 0, 0.01, ..., 3.99 best on the other 9 folds")


def _verification(name: str, label: str, base: float, full: float) -> Protocol:
    return Protocol(
        name=name, task="recog_ms1mv3", splits=("test",), crop="the release's aligned 112-px crops, resized to 112",
        flip_sum=True, paper={"test": (PaperFigure("accuracy", f"{label} accuracy %", 1.0, base, full),)},
        notes=_VERIFICATION_NOTE)


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol, exist_ok: bool = False) -> Protocol:
    """Add a protocol (e.g. for a user's own native dataset)."""
    if protocol.name in PROTOCOLS and not exist_ok:
        raise ValueError(f"a protocol for {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


_LANDMARK_FR_AUC = {"failure_threshold": 0.1, "failure_normalizer": "inter_ocular"}

for _protocol in (
    Protocol(
        name="300w", task="align_300w", splits=("test_common", "test_challenge", "test_full"),
        crop=_BOX_ZOOM.format(zoom=0.8), zoom=0.8,
        metric_options={"normalizers": ("inter_ocular", "inter_pupil")},
        paper={"test_common": _nme(2.60, 2.52), "test_challenge": _nme(4.60, 4.25), "test_full": _nme(3.00, 2.86)},
        notes="NME over all 68 points, inter-ocular = |p36 - p45| (reported), inter-pupil = eye centroids (logged)"),
    Protocol(
        name="wflw", task="align_wflw", splits=("test",), crop=_BOX_ZOOM.format(zoom=0.8), zoom=0.8,
        metric_options={"normalizers": ("inter_ocular", "inter_pupil"), **_LANDMARK_FR_AUC},
        paper={"test": _nme(None, 4.03)},
        notes="inter-ocular = |p60 - p72| (reported), inter-pupil = |p96 - p97|; FR and AUC at 0.1 (inter-ocular)"),
    Protocol(
        name="cofw", task="align_cofw", splits=("test",), crop=_BOX_ZOOM.format(zoom=0.8), zoom=0.8,
        metric_options={"normalizers": ("inter_ocular",), **_LANDMARK_FR_AUC},
        paper={"test": _nme(None, 3.01)},
        notes="normalizer |p8 - p9| (HRNet's 29-point convention); FR and AUC at 0.1"),
    Protocol(
        name="aflw", task="align_aflw", splits=("test",), crop=_BOX_ZOOM.format(zoom=1.0), zoom=1.0,
        metric_options={"normalizers": ("box_diagonal", "box", "inter_ocular", "inter_pupil"),
                        "failure_threshold": 0.07, "failure_normalizer": "box"},
        paper={"test": _nme(None, 0.95, "NME diag x100", "nme_box_diagonal")},
        notes="test = full (4,386); NME_diag = sqrt(w^2 + h^2) of the stored box (reported); box = sqrt(w h); "
              "FR and AUC at 0.07 on box NME, with the official 702-point grid"),
    Protocol(
        name="celebamask-hq", task="parsing_celebam", splits=("test",),
        crop="whole image resized 1024 -> 512 (identity at 512); scored at 512", score_size=512,
        paper={"test": (PaperFigure("f1_mean", "F1-mean x100", 100.0, 88.22, 88.2),)},
        notes="pooled pixel counts over the test set at 512 px (masks reduced from the converter's 1024 by nearest, "
              "exact for pixel-replicated masks); mean over the 18 non-background classes"),
    Protocol(
        name="lapa", task="parsing_lapa", splits=("test",),
        crop="5 ground-truth keypoints onto FaRL's template, tanh-warp 0.8; logits warped back to the photo's size",
        warp_factor=0.8,
        paper={"test": (PaperFigure("f1_mean", "F1-mean x100", 100.0, None, 91.5),)},
        notes="pooled pixel counts at each photo's native size; mean over the 10 non-background classes"),
    Protocol(
        name="morph2", task="age_morph2", splits=("test",), crop="the row's rule at 112 px (aligned copies: resize)",
        paper={"test": (PaperFigure("mae", "MAE", 1.0, 1.869, 1.96),)},
        notes="MAE of the expected age (sigmoid, L1-normalized over 0..100); CS@5 logged"),
    Protocol(
        name="utkface", task="age_utkface", splits=("test",), crop="the release's aligned chips resized to 112",
        paper={"test": (PaperFigure("mae", "MAE", 1.0, None, 4.10),)},
        notes="CORAL's test list; ages from the file names"),
    Protocol(
        name="affectnet", task="affect_affectnet", splits=("test",),
        crop="5 keypoints from the 68-point annotation onto the ArcFace 112 template (or the aligned copy resized)",
        notes="test = the official validation set, 7 classes; the paper's figures report no AffectNet accuracy"),
    Protocol(
        name="rafdb", task="affect_rafdb", splits=("test",), crop="the release's 100x100 aligned crops resized to 112",
        paper={"test": (PaperFigure("accuracy", "Acc %", 1.0, 90.38, 91.26),)},
        notes="overall top-1 accuracy on the 3,068 test images"),
    Protocol(
        name="ferplus", task="affect_ferplus", splits=("test",), crop="the 48x48 faces resized to 112",
        paper={"test": (PaperFigure("accuracy", "Acc %", 1.0, None, 90.40),)},
        notes="PrivateTest with the majority labels; contempt, unknown and NF left out"),
    Protocol(
        name="celeba", task="biattr_celeba", splits=("test",),
        crop="the release's 5 aligned-image landmarks onto the ArcFace 112 template",
        paper={"test": (PaperFigure("mean_accuracy", "mAcc %", 1.0, 91.43, 91.39),)},
        notes="prediction round(sigmoid(logit)); mean of the 40 per-attribute accuracies"),
    _verification("lfw", "LFW", 99.52, 99.40),
    _verification("cfp_fp", "CFP-FP", 95.86, 96.34),
    _verification("agedb_30", "AgeDB-30", 93.33, 93.65),
    _verification("calfw", "CALFW", 94.70, 94.75),
    _verification("cplfw", "CPLFW", 92.12, 92.27),
):
    register_protocol(_protocol)


def find_protocol(name: str) -> Protocol | None:
    """The protocol of a native dataset name (case-insensitive), also when its converter is registered under another
    name than the table's: then the protocol of the same official task applies, renamed. None if there is none."""
    key = name.lower()
    if key in PROTOCOLS:
        return PROTOCOLS[key]
    from ..data import NATIVE_DATASETS

    native = NATIVE_DATASETS.get(key)
    if native is None or native.task is None:
        return None
    same_task = [protocol for protocol in PROTOCOLS.values() if protocol.task == native.task]
    return dataclasses.replace(same_task[0], name=key) if len(same_task) == 1 else None


def get_protocol(name: str) -> Protocol:
    """``find_protocol`` that raises ``KeyError`` listing the known protocols."""
    protocol = find_protocol(name)
    if protocol is None:
        raise KeyError(f"no evaluation protocol for {name!r}; protocols: {', '.join(sorted(PROTOCOLS))} (or give a "
                       "model task name for its default protocol)")
    return protocol


def default_protocol(task_name: str) -> Protocol:
    """The protocol of a model task without a dataset's: the schema's crop rule (zoom 1, no tanh-warp), the task
    type's metric with its default options, no paper figures."""
    return Protocol(name=task_name, task=task_name)


__all__ = ["PROTOCOLS", "PaperFigure", "Protocol", "default_protocol", "find_protocol", "get_protocol",
           "register_protocol"]
