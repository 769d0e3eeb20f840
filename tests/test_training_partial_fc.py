"""Training with a sharded CosFace classifier (``classifier: {sharded: true}``, training.partial_fc): the same
weights and logged loss as the ordinary classifier in two processes, exact resume with class sampling, checkpoints
that hold the whole classifier and load on another process count, and config mistakes named before step 1."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import Array2D, ClassLabel, Dataset, Features, Image, List, Value
from safetensors.torch import load_file
from transformers import AutoModel

from faceptor_hf import FaceptorConfig
from faceptor_hf.configuration_faceptor import EXPRESSION_LABELS
from faceptor_hf.training import FaceptorForMultiTaskTraining
from faceptor_hf.training.config import ClassifierSpec, TrainingConfigError, parse_config
from faceptor_hf.training.partial_fc import PartialFC, clip_grad_norm_, shard_optimizer_state
from faceptor_hf.training.trainer import FaceptorTrainer, TrainingError

from conftest import TINY_DECODER, TINY_ENCODER, accelerate_launch

TASKS = [{"name": "recog_ms1mv3", "embedding_size": 8}, "affect_rafdb"]
IDENTITIES = 101  # blocks of 51 and 50 classes over two processes
RUNS_SCRIPT = Path(__file__).parent / "partial_fc_runs.py"


def write_faces(root: Path, rows: int = 16):
    """Two tiny datasets in the common schema: ``identities`` (ids in both processes' blocks of the classifier)
    and ``faces`` (expressions)."""
    images = [Image().encode_example(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8))
              for i in range(rows)]
    geometry = {"image": Image(), "face_box": List(Value("float32"), length=4),
                "face_keypoints": Array2D((5, 2), "float32")}
    common = {"image": images, "face_box": [None] * rows, "face_keypoints": [None] * rows}
    Dataset.from_dict({**common, "identity": [i * 13 % IDENTITIES for i in range(rows)]},
                      features=Features({**geometry, "identity": Value("int64")})).save_to_disk(root / "identities")
    Dataset.from_dict({**common, "expression": [i % 7 for i in range(rows)]},
                      features=Features({**geometry, "expression": ClassLabel(names=EXPRESSION_LABELS)})
                      ).save_to_disk(root / "faces")


def run_config(root: Path, output: Path, classifier: dict | None = None, **run) -> dict:
    recognition = {"dataset": str(root / "identities"), "batch_size": 4, "num_identities": IDENTITIES}
    if classifier is not None:
        recognition["classifier"] = classifier
    return {
        "model": {"config": dict(TINY_ENCODER, **TINY_DECODER, tasks=TASKS)},
        "tasks": {"recog_ms1mv3": recognition, "affect_rafdb": {"dataset": str(root / "faces"), "batch_size": 2}},
        "run": {"output_dir": str(output), "max_steps": 10, "learning_rate": 2e-3, "warmup_start_lr": 2e-4,
                "warmup_steps": 2, "max_grad_norm": 1.0, "save_steps": 5, "seed": 0, "num_workers": 0,
                "report_to": "none", "logging_steps": 1, **run},
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("partial_fc_data")
    write_faces(root)
    return root


# ---- one process ----------------------------------------------------------------------------------------------
def test_one_process_sharded_model_equals_the_ordinary_one():
    config = FaceptorConfig(**TINY_ENCODER, **TINY_DECODER, tasks=TASKS)
    torch.manual_seed(0)
    whole = FaceptorForMultiTaskTraining(config, {"recog_ms1mv3": 30}, classifier_seed=7).eval()
    sharded = FaceptorForMultiTaskTraining(config, {"recog_ms1mv3": 30}, faceptor=whole.faceptor,
                                           sharded_classifiers={"recog_ms1mv3": 1.0}, classifier_seed=7).eval()
    head = sharded.sharded_classifiers["recog_ms1mv3"]
    assert list(whole.classifiers) == ["recog_ms1mv3"] and not len(sharded.classifiers)
    assert torch.equal(head.weight, whole.classifiers["recog_ms1mv3"])  # both start from initial_classifier_rows
    assert set(sharded._ddp_params_and_buffers_to_ignore) == {"sharded_classifiers.recog_ms1mv3.weight",
                                                               "sharded_classifiers.recog_ms1mv3.step"}
    pixels = torch.randn(5, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    rows = {"recog_ms1mv3": slice(0, 3), "affect_rafdb": slice(3, 5)}
    labels = {"recog_ms1mv3": torch.tensor([0, 29, 11]), "affect_rafdb": torch.tensor([1, 6])}
    losses = []
    for model in (whole, sharded):
        model.zero_grad()
        output = model(pixel_values=pixels, task_rows=rows, labels=labels)
        output.loss.backward()
        losses.append(output.task_losses)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(head.weight.grad, whole.classifiers["recog_ms1mv3"].grad, rtol=1e-5, atol=1e-7)
    assert int(head.step) == 0  # in eval mode no class sample is drawn: the step stays
    state = sharded.state_dict()
    assert state["sharded_classifiers.recog_ms1mv3.weight"].shape == (30, 8)
    with pytest.raises(ValueError, match="num_identities does not size"):
        FaceptorForMultiTaskTraining(config, {}, sharded_classifiers={"recog_ms1mv3": 1.0})


def test_a_whole_classifier_loads_as_this_processes_block():
    full = torch.randn(23, 8)
    head = PartialFC(8, 23, rank=1, world_size=3)  # classes 8 .. 15
    head.load_state_dict({"weight": full, "step": torch.tensor(5)})
    assert torch.equal(head.weight.detach(), full[8:16]) and int(head.step) == 5
    head.load_state_dict({"weight": full[8:16] * 2, "step": torch.tensor(6)})  # a block of this size as it is
    assert torch.equal(head.weight.detach(), full[8:16] * 2)


def test_optimizer_checkpoints_hold_the_whole_moments_and_load_a_block():
    whole = PartialFC(8, 23)
    optimizer = torch.optim.AdamW(whole.parameters(), lr=1e-2)
    shard_optimizer_state(optimizer, [whole])
    whole(torch.randn(6, 8), torch.tensor([0, 3, 9, 12, 20, 22])).backward()
    optimizer.step()
    saved = optimizer.state_dict()
    assert saved["state"][0]["exp_avg"].shape == (23, 8)
    block = PartialFC(8, 23, rank=2, world_size=3)  # classes 16 .. 22
    block_optimizer = torch.optim.AdamW(block.parameters(), lr=1e-2)
    shard_optimizer_state(block_optimizer, [block])
    block_optimizer.load_state_dict(saved)
    state = block_optimizer.state[block.weight]
    assert torch.equal(state["exp_avg"], saved["state"][0]["exp_avg"][16:23])
    assert torch.equal(state["exp_avg_sq"], saved["state"][0]["exp_avg_sq"][16:23])
    assert torch.equal(state["step"], saved["state"][0]["step"])


def test_clipping_with_shards_equals_torch_in_one_process():
    torch.manual_seed(0)
    head, other = PartialFC(8, 23), torch.nn.Parameter(torch.randn(5))
    (head(torch.randn(4, 8), torch.tensor([1, 2, 3, 4])) * 100 + other.square().sum()).backward()
    reference = [torch.nn.Parameter(torch.zeros_like(p)) for p in (head.weight, other)]
    for parameter, original in zip(reference, (head.weight, other)):
        parameter.grad = original.grad.clone()
    expected_norm = torch.nn.utils.clip_grad_norm_(reference, 1.0)
    norm = clip_grad_norm_([head.weight, other], 1.0, [head])
    assert norm > 1.0  # it clipped
    torch.testing.assert_close(norm, expected_norm)
    torch.testing.assert_close(head.weight.grad, reference[0].grad)
    torch.testing.assert_close(other.grad, reference[1].grad)


# ---- config mistakes --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("classifier, message", [
    ({"sharded": True, "sample_rate": 0}, r"tasks\.recog_ms1mv3\.classifier\.sample_rate must lie in \(0, 1\], got 0"),
    ({"sharded": True, "sample_rate": 1.5}, r"tasks\.recog_ms1mv3\.classifier\.sample_rate must lie in \(0, 1\]"),
    ({"sample_rate": 0.5}, r"tasks\.recog_ms1mv3\.classifier\.sample_rate 0\.5 samples .*set sharded: true"),
    ({"shard": True}, r"tasks\.recog_ms1mv3\.classifier: unknown key 'shard' \(did you mean 'sharded'"),
    ({"sharded": "yes"}, r"tasks\.recog_ms1mv3\.classifier\.sharded must be bool"),
])
def test_bad_classifier_entries_are_named(data, tmp_path, classifier, message):
    with pytest.raises(TrainingConfigError, match=message):
        parse_config(run_config(data, tmp_path / "out", classifier))


def test_classifier_entry_is_parsed(data, tmp_path):
    config = parse_config(run_config(data, tmp_path / "out", {"sharded": True, "sample_rate": "5e-1"}))
    assert config.tasks[0].classifier == ClassifierSpec(sharded=True, sample_rate=0.5)
    assert config.tasks[1].classifier is None


def test_sharded_on_a_task_without_classifier_is_one_error_line(data, tmp_path, capsys):
    from faceptor_hf.commands import main as cli

    config = run_config(data, tmp_path / "out")
    config["tasks"]["affect_rafdb"]["classifier"] = {"sharded": True}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert cli(["train", str(path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert lines == ["error: tasks.affect_rafdb.classifier: sharded applies to recognition tasks (their CosFace "
                     "classifier); task 'affect_rafdb' is of type 'affect'"]
    assert not (tmp_path / "out").exists()


def test_plan_shows_the_sharded_classifier(data, tmp_path):
    trainer = FaceptorTrainer(parse_config(run_config(data, tmp_path / "out", {"sharded": True, "sample_rate": 0.5})))
    entry = trainer.plan()["tasks"][0]
    assert entry["classifier"] == {"sharded": True, "sample_rate": 0.5, "classes_per_process": IDENTITIES}
    assert {g["name"] for g in trainer.plan()["parameter_groups"]} >= {"classifiers"}


# ---- two processes ------------------------------------------------------------------------------------------
# Parameters the loss does not depend on (attention key biases and the anchor MLP's constant shift: softmax ignores
# a shift of its keys; the norm in front of the recognition head's batch norm) get float32 rounding noise as their
# gradient, which AdamW scales to full-size steps: any two runs whose sums run in another order (one process
# against two as well) end with different values there. The comparison runs keep them at their initial values.
UNDETERMINED = ["bias", "level_embeddings", "position_mlp"]


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """The four runs of ``partial_fc_runs.py`` in two CPU processes (one ``accelerate launch``)."""
    root = tmp_path_factory.mktemp("partial_fc_runs")
    config = root / "config.json"
    config.write_text(json.dumps(run_config(data, root / "unused", report_to="tensorboard", freeze=UNDETERMINED)))
    command, env = accelerate_launch(str(RUNS_SCRIPT), str(config), str(root))
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return root


def _checkpoint(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


def _classifier(state: dict) -> torch.Tensor:
    return next(value for key, value in state.items() if key.endswith(("classifiers.recog_ms1mv3",
                                                                       "sharded_classifiers.recog_ms1mv3.weight")))


def _logged(run: Path) -> list:
    """[step, {key: value}] of every log call of a run, its losses and learning rates (not its speed)."""
    return [[step, {key: value for key, value in values.items() if key.startswith(("loss/", "lr/"))}]
            for step, values in json.loads((run / "logged.json").read_text())]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / a.double().norm().clamp(min=1e-30))


@pytest.mark.slow
def test_two_processes_sharded_equals_the_ordinary_classifier(runs):
    whole, sharded = state_of(runs / "whole"), state_of(runs / "sharded")
    assert set(whole) == set(sharded)
    for name in whole:  # 1e-5 relative; 1e-6 absolute for values at rounding level (a running mean of ~1e-8)
        torch.testing.assert_close(sharded[name], whole[name], rtol=1e-5, atol=1e-6, msg=name)
    differences = {name: relative_difference(whole[name], sharded[name]) for name in whole
                   if whole[name].is_floating_point() and whole[name].norm() > 1e-3}
    assert max(differences.values()) <= 1e-5, max(differences.items(), key=lambda item: item[1])
    whole_classifier = _classifier(_checkpoint(runs / "whole" / "checkpoint-10"))
    assert relative_difference(_classifier(_checkpoint(runs / "whole" / "checkpoint-5")), whole_classifier) > 1e-3
    sharded_classifier = _classifier(_checkpoint(runs / "sharded" / "checkpoint-10"))
    assert sharded_classifier.shape == whole_classifier.shape == (IDENTITIES, 8)  # the whole matrix, gathered
    assert relative_difference(whole_classifier, sharded_classifier) <= 1e-5
    logged_whole, logged_sharded = _logged(runs / "whole"), _logged(runs / "sharded")
    assert [step for step, _ in logged_whole] == [step for step, _ in logged_sharded] == list(range(1, 11))
    for (step, a), (_, b) in zip(logged_whole, logged_sharded):
        for key in ("loss/recog_ms1mv3", "loss/affect_rafdb", "lr/classifiers"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (step, key)


def state_of(folder: Path) -> dict:
    return AutoModel.from_pretrained(folder).state_dict()


@pytest.mark.slow
def test_two_processes_with_sampling_resume_exactly(runs):
    uninterrupted, resumed = runs / "sampled", runs / "sampled_resumed"
    a, b = state_of(uninterrupted), state_of(resumed)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0, msg=name)
    for name, value in _checkpoint(uninterrupted / "checkpoint-10").items():
        torch.testing.assert_close(_checkpoint(resumed / "checkpoint-10")[name], value, atol=0, rtol=0, msg=name)
    assert _logged(resumed) == _logged(uninterrupted)
    # sampling scored a part of the classes: the sampled run differs from the sample_rate 1 one
    assert relative_difference(state_of(runs / "sharded")["recognition_heads.recog_ms1mv3.fc2.weight"],
                               a["recognition_heads.recog_ms1mv3.fc2.weight"]) > 1e-4


@pytest.mark.slow
def test_a_two_process_checkpoint_loads_on_one_process(runs, data, tmp_path):
    checkpoint = runs / "sampled" / "checkpoint-10"
    saved = _checkpoint(checkpoint)
    saved_moments = torch.load(checkpoint / "optimizer.bin", weights_only=True)
    config = run_config(data, tmp_path / "one", {"sharded": True, "sample_rate": 0.3}, freeze=UNDETERMINED)
    trainer = FaceptorTrainer(parse_config(config))
    with pytest.raises(TrainingError, match="written by 2 processes"):
        trainer.resume(str(checkpoint))  # the data streams are per process: an exact continuation needs 2
    trainer.accelerator.load_state(str(checkpoint))
    head = trainer.sharded_classifiers["recog_ms1mv3"]
    assert (head.start, head.stop) == (0, IDENTITIES)
    assert torch.equal(head.weight.detach(), _classifier(saved))
    assert int(head.step) == int(next(v for k, v in saved.items() if k.endswith("recog_ms1mv3.step")))
    moments = trainer.optimizer.state[head.weight]
    whole_moments = [state for state in saved_moments["state"].values() if state["exp_avg"].shape == (IDENTITIES, 8)]
    assert len(whole_moments) == 1 and torch.equal(moments["exp_avg"], whole_moments[0]["exp_avg"])
    iterators = {t.name: iter(trainer._loader(i, t)) for i, t in enumerate(trainer.tasks)}
    trainer.module.train()
    assert all(np.isfinite(list(trainer.train_step(iterators).values())))
