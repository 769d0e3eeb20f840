"""Configuration of Faceptor: the FaRL ViT-B/16 encoder, the task decoder and the task list.

The task list is ordered and every task carries its own type, query count, input-size group and label map, so a
new task is a config change. The presets reproduce the three released official models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from transformers import PretrainedConfig

from .task_types import FaceptorTask, task_from_dict

EXPRESSION_LABELS = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]
AGE_LABELS = [str(age) for age in range(101)]
CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
]
CELEBAMASK_HQ_LABELS = [
    "background", "neck", "skin", "cloth", "right_ear", "left_ear", "right_brow", "left_brow", "right_eye",
    "left_eye", "nose", "inner_mouth", "lower_lip", "upper_lip", "hair", "eyeglasses", "hat", "earring", "necklace",
]
LAPA_LABELS = [
    "background", "skin", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "nose", "upper_lip",
    "inner_mouth", "lower_lip", "hair",
]


def _landmark_labels(count: int) -> list[str]:
    return [f"point_{index}" for index in range(count)]


# The 13 official tasks in the official (YAML) order, with their label maps.
OFFICIAL_TASKS = {
    "recog_ms1mv3": {"type": "recog", "embedding_size": 512},
    "age_morph2": {"type": "age", "labels": AGE_LABELS},
    "age_utkface": {"type": "age", "labels": AGE_LABELS},
    "biattr_celeba": {"type": "biattr", "labels": CELEBA_ATTRIBUTES},
    "affect_affectnet": {"type": "affect", "labels": EXPRESSION_LABELS},
    "affect_rafdb": {"type": "affect", "labels": EXPRESSION_LABELS},
    "affect_ferplus": {"type": "affect", "labels": EXPRESSION_LABELS},
    "parsing_celebam": {"type": "parsing", "labels": CELEBAMASK_HQ_LABELS},
    "parsing_lapa": {"type": "parsing", "labels": LAPA_LABELS},
    "align_300w": {"type": "align", "labels": _landmark_labels(68)},
    "align_cofw": {"type": "align", "labels": _landmark_labels(29)},
    "align_wflw": {"type": "align", "labels": _landmark_labels(98)},
    "align_aflw": {"type": "align", "labels": _landmark_labels(19)},
}
FACEPTOR_BASE_TASKS = [
    "recog_ms1mv3", "age_morph2", "biattr_celeba", "affect_affectnet", "affect_rafdb", "parsing_celebam", "align_300w",
]
FACEPTOR_FULL_TASKS = list(OFFICIAL_TASKS)
LAYER_ATTENTION_LEVELS = [1, 3, 5, 7, 9]
DROP_PATH_MODES = ("sample", "token")
PRESET_NAMES = ("base", "full", "full_stage2", "naive")


# ---------------------------------------------------------------------------------------------------------------
# Official loss weighting. Each official training YAML gives a weight per task type (``common.task_weight``) and
# per task (``loss_weight``, equal to the task's per-GPU batch size); the LossesHolder rescales them to
# w_i = task_weight[T] * loss_weight_i / sum of loss_weight over the tasks of type T, and the total loss is
# sum(w_i * L_i) / sum(w_i). The presets and converted official checkpoints store the resulting w_i in each
# task's ``loss_weight``.
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossRecipe:
    """Loss weighting of one official training YAML: ``common.task_weight`` per task type and each task's
    ``loss_weight``."""

    type_weights: dict
    task_loss_weights: dict


_BASE_LOSS_WEIGHTS = {"recog_ms1mv3": 128.0, "age_morph2": 32.0, "biattr_celeba": 32.0, "affect_affectnet": 32.0,
                      "affect_rafdb": 8.0, "parsing_celebam": 2.0, "align_300w": 2.0}
OFFICIAL_LOSS_RECIPES = {
    "base": LossRecipe(
        {"recog": 5.0, "age": 6.0, "biattr": 2.0, "affect": 5.0, "parsing": 100.0, "align": 1000.0},
        _BASE_LOSS_WEIGHTS),
    "full": LossRecipe(
        {"recog": 5.0, "age": 5.0, "biattr": 2.0, "affect": 10.0, "parsing": 200.0, "align": 1000.0},
        {"recog_ms1mv3": 64.0, "age_morph2": 16.0, "age_utkface": 4.0, "biattr_celeba": 16.0,
         "affect_affectnet": 16.0, "affect_rafdb": 4.0, "affect_ferplus": 4.0, "parsing_celebam": 1.0,
         "parsing_lapa": 1.0, "align_300w": 1.0, "align_cofw": 1.0, "align_wflw": 1.0, "align_aflw": 1.0}),
    "naive": LossRecipe(
        {"recog": 1.0, "age": 1.0, "biattr": 1.0, "affect": 1.0, "parsing": 1.0, "align": 1.0}, _BASE_LOSS_WEIGHTS),
}


def _type_of(task) -> tuple[str, str]:
    if isinstance(task, FaceptorTask):
        return task.name, task.type
    official = OFFICIAL_TASKS.get(task)
    return task, official["type"] if official else task.split("_", 1)[0]


def official_loss_weights(tasks, recipe: str | None = None, fallback_weight: float = 1.0) -> dict[str, float]:
    """Per-task loss weights w of an official recipe (the official YAMLs' ``common.task_weight`` and
    ``loss_weight``): for each task type T of the recipe,
    w_i = task_weight[T] * loss_weight_i / sum of loss_weight over the given tasks of type T.

    Args:
        tasks: task names or ``FaceptorTask`` objects (a name's type is its official type, else its prefix).
        recipe: ``"base"`` (Faceptor-Base), ``"full"`` (Faceptor-Full stage 1) or ``"naive"``; None picks
            ``"base"`` when every official task given belongs to Faceptor-Base, else ``"full"``.
        fallback_weight: the weight of a task the recipe lacks (a user's own task or dataset); it does not take
            part in the rescaling.
    Base gives recog 5, age_morph2 6, biattr 2, affectnet 4, rafdb 1, parsing_celebam 100, align_300w 1000.
    """
    named = [_type_of(task) for task in tasks]
    if recipe is None:
        base = OFFICIAL_LOSS_RECIPES["base"].task_loss_weights
        official = [name for name, _ in named if name in OFFICIAL_TASKS]
        recipe = "base" if all(name in base for name in official) else "full"
    if recipe not in OFFICIAL_LOSS_RECIPES:
        raise ValueError(f"unknown loss recipe {recipe!r}; choose one of {sorted(OFFICIAL_LOSS_RECIPES)}")
    chosen = OFFICIAL_LOSS_RECIPES[recipe]

    def in_recipe(name, type_name):
        return name in chosen.task_loss_weights and type_name in chosen.type_weights

    type_sums: dict[str, float] = {}
    for name, type_name in named:
        if in_recipe(name, type_name):
            type_sums[type_name] = type_sums.get(type_name, 0.0) + chosen.task_loss_weights[name]
    return {name: (chosen.type_weights[type_name] * chosen.task_loss_weights[name] / type_sums[type_name]
                   if in_recipe(name, type_name) else float(fallback_weight))
            for name, type_name in named}


def with_official_loss_weights(tasks: list, recipe: str | None = None) -> list[FaceptorTask]:
    """``tasks`` (names, dicts or ``FaceptorTask``) as ``FaceptorTask`` objects whose ``loss_weight`` is the official
    recipe's (``official_loss_weights``; tasks the recipe lacks get 1.0)."""
    built = [_as_task(task) for task in tasks]
    weights = official_loss_weights(built, recipe=recipe)
    return [dataclasses.replace(task, loss_weight=weights[task.name]) for task in built]


def make_task(name: str, **fields) -> FaceptorTask:
    """Build one task entry (see ``task_types.make_task``); an official task name fills in its type and labels.
    ``fields`` are a task's saved fields, so the type may be given as ``type`` (as config.json stores it) or
    ``task_type``."""
    return task_from_dict({"name": name, **fields}, official=OFFICIAL_TASKS.get(name))


def _as_task(entry) -> FaceptorTask:
    if isinstance(entry, FaceptorTask):
        return entry
    if isinstance(entry, str):
        return make_task(entry)
    if isinstance(entry, dict):
        if "name" not in entry:
            raise ValueError(f"a task entry needs a 'name', got {entry}")
        return make_task(**entry)
    raise TypeError(f"a task is an official task name, a dict or a FaceptorTask, got {type(entry).__name__}")


class FaceptorConfig(PretrainedConfig):
    r"""Configuration of [`FaceptorModel`].

    Args:
        tasks (`list[str | dict | FaceptorTask]`): ordered task list; a string is an official task name, a dict is
            passed to [`make_task`]. Stored as [`FaceptorTask`] objects (dicts in config.json). Defaults to the 7
            tasks of Faceptor-Base.
        head_type (`str`): ``"faceptor"`` (shared transformer decoder with task queries) or ``"naive"`` (the
            paper's Naive Faceptor: one standardized head per task type).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, patch_size, layer_norm_eps,
        drop_path_rate: FaRL/CLIP ViT encoder (ViT-B/16: 768, 12, 12, 3072, 16, 1e-5, 0.2).
        drop_path_mode (`str`): what stochastic depth drops in training. ``"sample"`` (default, timm's usual
            behavior): a whole sample's residual branch. ``"token"``: one token position, shared by the whole
            batch — what the official encoder does, because its blocks run sequence-first (L, B, D) and timm's
            DropPath draws one mask entry per index of the first axis. The official recipes use ``"token"``.
        position_grid_size (`int`): side of the stored position table (32 -> 1 + 32*32 rows); it is resized
            bicubically to the actual token grid.
        decoder_hidden_size, decoder_num_layers, decoder_num_attention_heads, decoder_ffn_dim,
        decoder_layer_norm_eps: post-norm query decoder (256, 9, 8, 2048, 1e-5).
        decoder_levels (`list[int]`): encoder layers (0-based block index) the decoder reads; the official stage 1
            reads only the last block (11). The first entry feeds the map head's pixel path.
        layer_attention_levels (`list[int]`): extra encoder layers with their own projections and layer-aware
            embeddings (Layer-Attention, stage 2: ``[1, 3, 5, 7, 9]``); empty for stage 1.
        recognition_layer (`int`): encoder layer pooled by the recognition head.
        recognition_batch_norm_eps, map_norm_eps: head epsilons (2e-5, 1e-6).
        naive_value_levels, naive_value_hidden_size, naive_value_reduction: Naive value heads (layers [5, 7, 9, 11],
            512 channels, channel-gate reduction 16).
        naive_dense_levels, naive_dense_channels, naive_pool_scales: Naive UPerNet heads (layers [3, 5, 7, 11],
            512 channels, pyramid pooling scales (1, 2, 3, 6)).
        initializer_range (`float`): std of the truncated-normal init of encoder weights.
    """

    model_type = "faceptor"

    def __init__(
        self,
        tasks=None,
        head_type="faceptor",
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        patch_size=16,
        num_channels=3,
        position_grid_size=32,
        layer_norm_eps=1e-5,
        drop_path_rate=0.2,
        drop_path_mode="sample",
        decoder_hidden_size=256,
        decoder_num_layers=9,
        decoder_num_attention_heads=8,
        decoder_ffn_dim=2048,
        decoder_layer_norm_eps=1e-5,
        decoder_levels=None,
        layer_attention_levels=None,
        recognition_layer=None,
        recognition_batch_norm_eps=2e-5,
        map_norm_eps=1e-6,
        naive_value_levels=None,
        naive_value_hidden_size=512,
        naive_value_reduction=16,
        naive_dense_levels=None,
        naive_dense_channels=512,
        naive_pool_scales=None,
        initializer_range=0.02,
        **kwargs,
    ):
        last = num_hidden_layers - 1
        self.head_type = head_type
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.position_grid_size = position_grid_size
        self.layer_norm_eps = layer_norm_eps
        self.drop_path_rate = drop_path_rate
        self.drop_path_mode = drop_path_mode
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_layers = decoder_num_layers
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_ffn_dim = decoder_ffn_dim
        self.decoder_layer_norm_eps = decoder_layer_norm_eps
        self.decoder_levels = list(decoder_levels) if decoder_levels is not None else [last]
        self.layer_attention_levels = list(layer_attention_levels) if layer_attention_levels is not None else []
        self.recognition_layer = recognition_layer if recognition_layer is not None else last
        self.recognition_batch_norm_eps = recognition_batch_norm_eps
        self.map_norm_eps = map_norm_eps
        self.naive_value_levels = list(naive_value_levels) if naive_value_levels is not None else [5, 7, 9, 11]
        self.naive_value_hidden_size = naive_value_hidden_size
        self.naive_value_reduction = naive_value_reduction
        self.naive_dense_levels = list(naive_dense_levels) if naive_dense_levels is not None else [3, 5, 7, 11]
        self.naive_dense_channels = naive_dense_channels
        self.naive_pool_scales = list(naive_pool_scales) if naive_pool_scales is not None else [1, 2, 3, 6]
        self.initializer_range = initializer_range
        tasks = FACEPTOR_BASE_TASKS if tasks is None else tasks
        self.tasks = [_as_task(t) for t in tasks]
        super().__init__(**kwargs)
        self.validate()

    def validate(self):
        """Raise ``ValueError`` naming the first inconsistent field."""
        if self.head_type not in ("faceptor", "naive"):
            raise ValueError(f"head_type must be 'faceptor' or 'naive', got {self.head_type!r}")
        if self.drop_path_mode not in DROP_PATH_MODES:
            raise ValueError(f"drop_path_mode must be one of {list(DROP_PATH_MODES)}, got {self.drop_path_mode!r}")
        names = [t.name for t in self.tasks]
        if not names:
            raise ValueError("tasks is empty: a Faceptor model needs at least one task")
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.decoder_hidden_size % self.decoder_num_attention_heads:
            raise ValueError("decoder_hidden_size must be divisible by decoder_num_attention_heads")
        if self.decoder_hidden_size % 4:
            raise ValueError("decoder_hidden_size must be divisible by 4 (2-D sine position code)")
        layers = self.decoder_levels + self.layer_attention_levels + [self.recognition_layer]
        if self.head_type == "naive":
            layers = layers + self.naive_value_levels + self.naive_dense_levels
        bad = [level for level in layers if not 0 <= level < self.num_hidden_layers]
        if bad:
            raise ValueError(f"encoder levels {bad} are outside 0..{self.num_hidden_layers - 1}")
        if self.head_type == "naive":
            if len(self.naive_value_levels) != 4 or len(self.naive_dense_levels) != 4:
                raise ValueError("the Naive heads read exactly 4 encoder levels each")
            if self.naive_value_hidden_size % 4:
                raise ValueError("naive_value_hidden_size must be divisible by 4 (one quarter per level)")
        for task in self.tasks:
            if task.readout != "embedding" and task.num_queries < 1:
                raise ValueError(f"task {task.name!r}: needs at least one query")

    # ---- convenient views of the task list -------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def get_task(self, name: str) -> FaceptorTask:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"unknown task {name!r}; this model has {self.task_names}")

    def named_tasks(self, requested) -> list[str]:
        """Task names from ``requested``: a name, a comma-separated string, or a list of either (as a command line
        gives them), in the order given, each once; may be empty. Raises ``KeyError`` naming the unknown ones and
        this model's tasks."""
        items = [requested] if isinstance(requested, str) else list(requested)
        names = list(dict.fromkeys(part.strip() for item in items for part in str(item).split(",") if part.strip()))
        unknown = [name for name in names if name not in self.task_names]
        if unknown:
            raise KeyError(f"unknown task {', '.join(map(repr, unknown))}; this model's tasks are: "
                           f"{', '.join(self.task_names)}")
        return names

    @property
    def variant_name(self) -> str:
        """"Naive Faceptor", "Faceptor-Base, stage 1", "Faceptor-Full, stage 2", or "Faceptor (N tasks), stage S"."""
        if self.head_type == "naive":
            return "Naive Faceptor"
        family = {7: "Faceptor-Base", 13: "Faceptor-Full"}.get(len(self.tasks), f"Faceptor ({len(self.tasks)} tasks)")
        return f"{family}, stage {2 if self.layer_attention_levels else 1}"

    @property
    def id2label_by_task(self) -> dict[str, dict[int, str]]:
        return {t.name: dict(enumerate(t.labels)) for t in self.tasks}

    def to_dict(self):
        output = super().to_dict()
        output["tasks"] = [task.to_dict() for task in self.tasks]
        return output

    # ---- presets ----------------------------------------------------------------------------------------------
    @classmethod
    def faceptor_base(cls, **kwargs) -> "FaceptorConfig":
        """Faceptor-Base: 7 tasks, stage 1 (103.2M parameters), with the Base recipe's loss weights."""
        return cls(tasks=with_official_loss_weights(FACEPTOR_BASE_TASKS, "base"), **kwargs)

    @classmethod
    def faceptor_full(cls, stage: int = 1, **kwargs) -> "FaceptorConfig":
        """Faceptor-Full: 13 tasks with the Full recipe's loss weights; ``stage=2`` adds Layer-Attention over layers
        1, 3, 5, 7, 9 (stage 2 fine-tunes one task, whose weight then cancels out)."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        levels = LAYER_ATTENTION_LEVELS if stage == 2 else []
        return cls(tasks=with_official_loss_weights(FACEPTOR_FULL_TASKS, "full"), layer_attention_levels=levels,
                   **kwargs)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "FaceptorConfig":
        """The config of a preset by name (``PRESET_NAMES``: base, full, full_stage2, naive), with ``kwargs`` set on
        top; the names training configs and ``faceptor-hf convert --preset`` use."""
        builders = {"base": cls.faceptor_base, "full": cls.faceptor_full,
                    "full_stage2": lambda **fields: cls.faceptor_full(stage=2, **fields), "naive": cls.naive_faceptor}
        if name not in builders:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
        return builders[name](**kwargs)

    @classmethod
    def naive_faceptor(cls, **kwargs) -> "FaceptorConfig":
        """Naive Faceptor: shared encoder + standardized per-type heads (178.9M parameters), Naive loss weights."""
        return cls(tasks=with_official_loss_weights(FACEPTOR_BASE_TASKS, "naive"), head_type="naive", **kwargs)


__all__ = ["FaceptorConfig", "FaceptorTask", "LossRecipe", "OFFICIAL_LOSS_RECIPES", "OFFICIAL_TASKS", "PRESET_NAMES",
           "make_task", "official_loss_weights", "with_official_loss_weights"]
