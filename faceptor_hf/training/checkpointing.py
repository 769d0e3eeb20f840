"""Checkpoints of a training run: save, rotate, find and resume.

``<output_dir>/checkpoint-<step>/`` holds what ``accelerator.save_state`` writes (training model, optimizer, the
objects registered with ``accelerator.register_for_checkpointing``: scheduler and gradient scaler, RNG states per
process) plus ``trainer_state.json``: the step, the samples each task's stream has handed out, the stream state of
each process for ``streaming`` tasks, the skipped and overflowed step counts, the task list and the process count.
That file is read before any weight is loaded (a resume with other tasks or another process count is refused) and
written last, so a folder without it — a run killed mid-save — is never resumed from.

Several machines without a shared filesystem (``run.save_on_each_node``): every machine (node) holds its own part of
``checkpoint-<step>`` on its own disk — the weights, optimizer and schedule (Accelerate's ``save_on_each_node``) and
the RNG states of its own processes — and its first process renames its part once complete. A resume agrees across
nodes: ``latest`` is the newest step complete on every node, and a node missing its part is an error naming it.
"""

from __future__ import annotations

import json
import os
import re
import shutil

from .errors import TrainingError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints of ``output_dir`` as (step, folder), oldest first."""
    found = []
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            match = CHECKPOINT_PATTERN.match(name)
            if match and os.path.isfile(os.path.join(output_dir, name, STATE_FILE)):
                found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def save_checkpoint(accelerator, output_dir: str, state: dict, save_total_limit: int | None = None,
                    save_on_each_node: bool = False) -> str:
    """Write ``checkpoint-<state["step"]>`` (every process takes part), keeping the newest ``save_total_limit``.

    The folder is written as ``.partial`` and renamed once ``trainer_state.json`` (``state``) is in it: by the main
    process, or with ``save_on_each_node`` by each node's first process, in its own ``output_dir``."""
    final = os.path.join(output_dir, f"checkpoint-{state['step']}")
    partial = final + ".partial"
    finisher = accelerator.is_local_main_process if save_on_each_node else accelerator.is_main_process
    if finisher:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    if finisher:
        with open(os.path.join(partial, STATE_FILE), "w") as handle:
            json.dump(state, handle)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        if save_total_limit:
            for _, old in list_checkpoints(output_dir)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def node_rank(accelerator) -> int:
    """This process's machine rank: ``GROUP_RANK`` as torchrun (under ``accelerate launch``) sets it, else the
    process index over the processes per machine."""
    if "GROUP_RANK" in os.environ:
        return int(os.environ["GROUP_RANK"])
    return accelerator.process_index // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def agree_on_each_node(accelerator, where: str, output_dir: str) -> str:
    """The checkpoint folder every node resumes from when each holds its own part (``save_on_each_node``): for
    ``"latest"`` the newest step complete on every node, else ``where`` once every node has its part complete.
    Every process takes part (one ``all_gather_object``), so all of them raise the same ``TrainingError``, naming
    the node and its path, or none does."""
    import torch.distributed as dist

    latest = where == "latest"
    path = os.path.abspath(output_dir if latest else where)
    mine = ([step for step, _ in list_checkpoints(output_dir)] if latest
            else os.path.isfile(os.path.join(where, STATE_FILE)))
    views = [None] * accelerator.num_processes
    dist.all_gather_object(views, (node_rank(accelerator), path, mine))
    nodes = {node: (folder, found) for node, folder, found in sorted(views, key=lambda view: view[0])}
    if latest:
        common = set.intersection(*(set(steps) for _, steps in nodes.values()))
        if not common:
            held = "; ".join(f"node {node}: {folder} has steps {steps or 'none'}"
                             for node, (folder, steps) in nodes.items())
            raise TrainingError(f"--resume-from-checkpoint latest: no checkpoint-<step> is complete on every node "
                                f"({held})")
        return os.path.join(output_dir, f"checkpoint-{max(common)}")
    missing = [f"node {node} ({folder})" for node, (folder, complete) in nodes.items() if not complete]
    if missing:
        raise TrainingError(f"checkpoint {where!r} has no complete part (with {STATE_FILE}) on {', '.join(missing)}; "
                            "resume from a step every node holds, e.g. latest")
    return where


def resume_checkpoint(accelerator, where: str, output_dir: str, task_names: list[str],
                      save_on_each_node: bool = False) -> tuple[str, dict]:
    """Load the checkpoint ``where`` (a folder, or ``"latest"``: the newest complete one of ``output_dir``) into
    the prepared objects of ``accelerator``; -> (folder, its ``trainer_state.json``). With ``save_on_each_node``
    the nodes first agree on the folder (``agree_on_each_node``).

    Raises ``TrainingError`` for a missing, incomplete or damaged checkpoint, or one written for other tasks or
    another number of processes (the per-process sample streams and RNG states would not continue exactly)."""
    if save_on_each_node and accelerator.num_processes > 1:
        where = agree_on_each_node(accelerator, where, output_dir)
    if where == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise TrainingError(f"--resume-from-checkpoint latest: no complete checkpoint-<step> folder in "
                                f"{output_dir!r}")
        where = found[-1][1]
    if not os.path.isdir(where):
        raise TrainingError(f"checkpoint {where!r} does not exist")
    state_path = os.path.join(where, STATE_FILE)
    if not os.path.isfile(state_path):
        raise TrainingError(f"checkpoint {where!r} is incomplete (no {STATE_FILE}: the run was stopped while "
                            "saving it); resume from an earlier checkpoint")
    with open(state_path) as handle:
        state = json.load(handle)
    if state.get("tasks") != task_names:
        raise TrainingError(f"checkpoint {where!r} trained tasks {state.get('tasks')}, this run has {task_names}")
    if state.get("world_size") != accelerator.num_processes:
        raise TrainingError(f"checkpoint {where!r} was written by {state.get('world_size')} processes; resume "
                            f"with the same number (now {accelerator.num_processes}) to continue exactly")
    try:
        accelerator.load_state(where)
    except Exception as error:  # noqa: BLE001 - safetensors/pickle/torch raise many types for damaged files
        raise TrainingError(f"checkpoint {where!r} cannot be loaded ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}); it is damaged") from error
    return where, state


__all__ = ["CHECKPOINT_PATTERN", "STATE_FILE", "agree_on_each_node", "list_checkpoints", "node_rank",
           "resume_checkpoint", "save_checkpoint"]
