"""Publishing to the Hugging Face Hub: one atomic commit per push, with the model card rendered from
``model_card.md`` (the repository's top-level card is the template).

A push writes everything into a temporary folder and uploads it as ONE commit, so a server failure mid-upload
leaves the previous revision untouched; files of earlier pushes that the new one does not contain are kept.
"""

from __future__ import annotations

import os
import re
import tempfile

TEMPLATE_NAME = "model_card.md"
EXAMPLE_REPO = "your-org/faceptor-base"


def template_text() -> str | None:
    """The card template shipped with the package (None where only remote code is available)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), TEMPLATE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def task_table(tasks: list[dict]) -> str:
    """Markdown table of a model's tasks with their label maps."""
    rows = ["| task | type | input | outputs | labels |", "|---|---|---|---|---|"]
    for task in tasks:
        if task["readout"] == "embedding":
            outputs, labels = f"{task['embedding_size']}-d embedding", "—"
        else:
            outputs, names = str(task["num_queries"]), task["labels"]
            if task["type"] == "align":
                labels = f"{len(names)} landmarks (dataset order)"
            elif task["type"] == "age":
                labels = f"bins {names[0]} … {names[-1]} (years)"
            else:
                labels = ", ".join(names)
        rows.append(f"| `{task['name']}` | {task['type']} | {task['input_size']} px | {outputs} | {labels} |")
    return "\n".join(rows)


def render_model_card(config, repo_id: str | None = None, tags: list[str] | None = None) -> str | None:
    """README.md for a pushed model: the template with this model's variant, repo id, task table and extra tags."""
    text = template_text()
    if text is None:
        return None
    if tags:
        text = text.replace("\ntags:\n", "\ntags:\n" + "".join(f"  - {tag}\n" for tag in tags), 1)
    text = re.sub(r"<!-- tasks:start -->.*?<!-- tasks:end -->",
                  lambda _: "<!-- tasks:start -->\n" + task_table(config.tasks) + "\n<!-- tasks:end -->",
                  text, count=1, flags=re.S)
    text = text.replace("\n# Faceptor\n", f"\n# Faceptor — {config.variant_name}\n", 1)
    if repo_id:
        text = text.replace(EXAMPLE_REPO, repo_id)
    if getattr(config, "untrained", False):
        text = text.replace("\n# Faceptor", "\n> **UNTRAINED RANDOM WEIGHTS** — for testing the code path only.\n\n# Faceptor", 1)
    return text


class PushError(RuntimeError):
    """A push failed; nothing was committed (the repository keeps its previous revision)."""


def push_folder(save, repo_id: str, readme: str | None = None, commit_message: str | None = None,
                private: bool | None = None, token=None, revision: str | None = None, create_pr: bool = False,
                commit_description: str | None = None):
    """``save(folder)`` writes the files; they are uploaded to ``repo_id`` in one commit. Returns CommitInfo."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    stage = "creating the repository"
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and not create_pr:
            stage = f"creating branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            save(folder)
            if readme is not None:
                with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
                    handle.write(readme)
            stage = "uploading"
            return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                     commit_message=commit_message or f"Upload {os.path.basename(repo_id)}",
                                     commit_description=commit_description)
    except Exception as error:  # noqa: BLE001 - network/HTTP errors of many types; all mean the push failed
        if isinstance(error, PushError):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PushError(f"push to {repo_id!r} failed while {stage}: {reason}. Nothing was committed: the "
                        "repository keeps its previous revision; run the push again.") from error
