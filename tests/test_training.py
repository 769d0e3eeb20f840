"""Joint training end to end on generated data in the common schema: loss falls, exact resume, stage 2 trains
only Layer-Attention, the saved folder loads and runs in the pipeline, two CPU processes stay in step, and bad
configs or data fail early with errors that name the task, key or file."""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import Array2D, ClassLabel, Dataset, Features, Image, List, Value
from transformers import AutoModel, pipeline

from faceptor_hf.configuration_faceptor import EXPRESSION_LABELS
from faceptor_hf.task_types import TASK_TYPES, attach_task_part
from faceptor_hf.training.config import TrainingConfigError, parse_config
from faceptor_hf.training.datasets import TaskDataError
from faceptor_hf.training.trainer import FaceptorTrainer, TrainingError

from conftest import IMAGES, TINY_DECODER, TINY_ENCODER, accelerate_launch

TASKS = [{"name": "recog_ms1mv3", "embedding_size": 8}, "affect_rafdb",
         {"name": "align_tiny", "type": "align", "num_queries": 4}]


def _geometry(count):
    return {"image": Image(), "face_box": List(Value("float32"), length=4),
            "face_keypoints": Array2D((5, 2), "float32")}


def write_datasets(root, rows=12, seed=0):
    """Three tiny datasets in the common schema, saved with save_to_disk: identities, expressions, landmarks."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(rows)]
    for index, image in enumerate(images):  # a bright square whose corners the landmarks mark
        x, y = 8 + index % 5 * 3, 10 + index % 4 * 3
        image[y:y + 20, x:x + 20] = 255
    common = {"image": [Image().encode_example(i) for i in images], "face_box": [None] * rows,
              "face_keypoints": [None] * rows}
    Dataset.from_dict({**common, "identity": [i % 3 for i in range(rows)]},
                      features=Features({**_geometry(0), "identity": Value("int64")})).save_to_disk(root / "ids")
    Dataset.from_dict({**common, "expression": [i % 7 for i in range(rows)]},
                      features=Features({**_geometry(0), "expression": ClassLabel(names=EXPRESSION_LABELS)})
                      ).save_to_disk(root / "faces")
    marks = [[[8 + i % 5 * 3, 10 + i % 4 * 3], [27 + i % 5 * 3, 10 + i % 4 * 3], [8 + i % 5 * 3, 29 + i % 4 * 3],
              [27 + i % 5 * 3, 29 + i % 4 * 3]] for i in range(rows)]
    Dataset.from_dict({**common, "landmarks": marks},
                      features=Features({**_geometry(0), "landmarks": Array2D((4, 2), "float32")})
                      ).save_to_disk(root / "marks")


def run_config(root, output, max_steps=6, **run):
    return {
        "model": {"config": dict(TINY_ENCODER, **TINY_DECODER, tasks=TASKS, drop_path_rate=0.1)},
        "tasks": {
            "recog_ms1mv3": {"dataset": str(root / "ids"), "batch_size": 4},
            "affect_rafdb": {"dataset": str(root / "faces"), "batch_size": 4},
            "align_tiny": {"dataset": str(root / "marks"), "batch_size": 2, "loss_weight": 10.0},
        },
        "run": {"output_dir": str(output), "max_steps": max_steps, "learning_rate": 2e-3, "warmup_start_lr": 2e-4,
                "warmup_steps": 2, "save_steps": 3, "seed": 0, "num_workers": 0, "report_to": "none",
                "logging_steps": 1, **run},
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("training_data")
    write_datasets(root)
    rows = 4  # landmarks of the wrong count: only the example builder can tell
    Dataset.from_dict({"image": [Image().encode_example(np.zeros((32, 32, 3), dtype=np.uint8))] * rows,
                       "face_box": [None] * rows, "face_keypoints": [None] * rows,
                       "landmarks": [[[1.0, 2.0]] * 3] * rows},
                      features=Features({**_geometry(0), "landmarks": Array2D((3, 2), "float32")})
                      ).save_to_disk(root / "three_points")
    return root


def train(config_dict, resume=None):
    trainer = FaceptorTrainer(parse_config(config_dict))
    trainer.train(resume_from=resume)
    return trainer


def state_of(folder):
    return AutoModel.from_pretrained(folder).state_dict()


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    output = tmp_path_factory.mktemp("run_a")
    trainer = train(run_config(data, output))
    return output, trainer


def test_loss_falls_and_the_saved_model_works(uninterrupted, data, tmp_path):
    output, _ = uninterrupted
    trainer = FaceptorTrainer(parse_config(run_config(data, tmp_path / "longer", max_steps=30, save_steps=None)))
    history, step = [], trainer.train_step

    def recorded_step(iterators):  # the run's own step losses, as its loop computes them
        losses = step(iterators)
        history.append(sum(losses.values()))
        return losses

    trainer.train_step = recorded_step
    trainer.train()
    summary = json.loads((tmp_path / "longer" / "training_summary.json").read_text())
    assert summary["steps"] == 30 and summary["skipped_steps"] == 0 and len(history) == 30
    # the loss of the last steps is below that of the first
    assert np.mean(history[-5:]) < 0.8 * np.mean(history[:5]), history
    model = AutoModel.from_pretrained(output)
    assert not model.is_untrained and "classifier" not in " ".join(model.state_dict())
    faces = pipeline("face-analysis", model=str(output))(str(IMAGES / "astronaut.png"))
    assert len(faces) == 1 and set(faces[0]["tasks"]) == {"recog_ms1mv3", "affect_rafdb", "align_tiny"}
    assert "untrained" not in faces[0]


def test_resume_after_a_kill_ends_with_the_same_weights(uninterrupted, data, tmp_path, monkeypatch):
    output_a, _ = uninterrupted
    output_b = tmp_path / "run_b"
    original = FaceptorTrainer.save_checkpoint

    def save_then_die(self):
        original(self)
        if self.step == 3:
            raise KeyboardInterrupt("killed after the step-3 checkpoint")

    monkeypatch.setattr(FaceptorTrainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(data, output_b))
    monkeypatch.undo()
    assert (output_b / "checkpoint-3" / "trainer_state.json").exists()
    # a half-written later checkpoint is never picked as "latest"
    (output_b / "checkpoint-5").mkdir()
    train(run_config(data, output_b), resume="latest")
    a, b = state_of(output_a), state_of(output_b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0, msg=name)


def test_damaged_and_incomplete_checkpoints_are_reported(uninterrupted, data, tmp_path):
    output_a, _ = uninterrupted
    config = run_config(data, output_a)
    with pytest.raises(TrainingError, match="incomplete"):
        (output_a / "checkpoint-99").mkdir(exist_ok=True)
        FaceptorTrainer(parse_config(config)).resume(str(output_a / "checkpoint-99"))
    damaged = tmp_path / "checkpoint-3"
    import shutil

    shutil.copytree(output_a / "checkpoint-3", damaged)
    weights = next(p for p in damaged.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(TrainingError, match="damaged"):
        FaceptorTrainer(parse_config(config)).resume(str(damaged))


def test_stage_two_trains_only_layer_attention(uninterrupted, data, tmp_path):
    stage1, _ = uninterrupted
    config = run_config(data, tmp_path / "stage2", max_steps=3, save_steps=None)
    config["model"] = {"pretrained": str(stage1), "overrides": {"layer_attention_levels": [0, 1, 2]}}
    config["tasks"] = {"affect_rafdb": config["tasks"]["affect_rafdb"]}
    config["run"]["trainable"] = ["layer_attention"]
    train(config)
    before, after = state_of(stage1), state_of(tmp_path / "stage2")
    changed = {name for name in after if name not in before or not torch.equal(after[name], before[name])}
    assert changed and all("layer_attention" in name for name in changed), changed
    assert {n for n in after if "layer_attention" in n} <= changed | {n for n in after if n not in before}


def test_a_new_task_by_config_trains_from_a_pretrained_model(uninterrupted, data, tmp_path):
    stage1, _ = uninterrupted
    rows = 8
    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(rows)]
    Dataset.from_dict({"image": [Image().encode_example(i) for i in images], "face_box": [None] * rows,
                       "face_keypoints": [None] * rows, "values": [[float(i), -float(i)] for i in range(rows)]},
                      features=Features({**_geometry(0), "values": List(Value("float32"), length=2)})
                      ).save_to_disk(tmp_path / "pose")
    config = run_config(data, tmp_path / "pose_run", max_steps=2, save_steps=None)
    config["model"] = {"pretrained": str(stage1)}
    config["tasks"] = {"pose_synthetic": {"dataset": str(tmp_path / "pose"), "batch_size": 4, "type": "regression",
                                          "labels": ["yaw", "pitch"]}}
    config["run"]["freeze"] = ["faceptor.encoder."]
    train(config)
    encoder_before = {k: v for k, v in state_of(stage1).items() if k.startswith("encoder.")}
    after = state_of(tmp_path / "pose_run")
    assert all(torch.equal(after[k], v) for k, v in encoder_before.items())
    faces = pipeline("face-analysis", model=str(tmp_path / "pose_run"))(str(IMAGES / "astronaut.png"),
                                                                         tasks=["pose_synthetic"])
    assert set(faces[0]["tasks"]["pose_synthetic"]["values"]) == {"yaw", "pitch"}


def test_the_training_model_returns_the_weighted_loss_of_each_tasks_rows():
    from faceptor_hf import FaceptorConfig
    from faceptor_hf.training import FaceptorForMultiTaskTraining, combine_task_losses, task_loss

    config = FaceptorConfig(**TINY_ENCODER, **TINY_DECODER, tasks=[*TASKS[:2], {**TASKS[2], "loss_weight": 10.0}])
    torch.manual_seed(0)
    model = FaceptorForMultiTaskTraining(config, {"recog_ms1mv3": 5}).eval()  # no drop-path: rows comparable
    assert model.classifiers["recog_ms1mv3"].shape == (5, 8) and model.loss_weights["align_tiny"] == 10.0
    generator = torch.Generator().manual_seed(1)
    pixels, dense = torch.randn(5, 3, 112, 112, generator=generator), torch.randn(2, 3, 64, 64, generator=generator)
    rows = {"recog_ms1mv3": slice(0, 2), "affect_rafdb": slice(2, 5), "align_tiny": slice(0, 2)}
    labels = {"recog_ms1mv3": torch.tensor([4, 1]), "affect_rafdb": torch.tensor([0, 6, 3]),
              "align_tiny": torch.rand(2, 4, 2, generator=generator) * 511}
    output = model(pixel_values=pixels, dense_pixel_values=dense, task_rows=rows, labels=labels)
    assert output.task_logits["affect_rafdb"].shape == (3, 7) and output.task_logits["recog_ms1mv3"].shape == (2, 8)
    alone = model.faceptor(pixel_values=pixels[2:5], tasks=["affect_rafdb"]).task_logits["affect_rafdb"]
    torch.testing.assert_close(output.task_logits["affect_rafdb"], alone)
    expected = {name: task_loss(config.get_task(name), output.task_logits[name], labels[name],
                                {"classifier_weight": model.classifiers[name]} if name in model.classifiers else {})
                for name in rows}
    for name, value in expected.items():
        torch.testing.assert_close(output.task_losses[name], value)
    torch.testing.assert_close(output.loss, combine_task_losses(expected, {"recog_ms1mv3": 1.0, "affect_rafdb": 1.0,
                                                                             "align_tiny": 10.0}))
    output.loss.backward()
    assert model.classifiers["recog_ms1mv3"].grad.abs().sum() > 0  # used inside forward, as DDP needs
    assert model(pixel_values=pixels, task_rows={"affect_rafdb": slice(2, 5)}).loss is None
    with pytest.raises(ValueError, match=r"labels given for task\(s\) \['align_tiny'\] that task_rows does not"):
        model(pixel_values=pixels, task_rows={"affect_rafdb": slice(2, 5)},
              labels={"affect_rafdb": labels["affect_rafdb"], "align_tiny": labels["align_tiny"]})
    with pytest.raises(ValueError, match="'align_tiny' reads dense_pixel_values"):
        model(pixel_values=pixels, task_rows={"align_tiny": slice(0, 2)})
    with pytest.raises(ValueError, match="not recognition tasks"):
        FaceptorForMultiTaskTraining(config, {"affect_rafdb": 3})


def test_checkpoints_written_before_the_training_model_resume(uninterrupted, data, tmp_path):
    """Checkpoints of the earlier training module (the published model under ``model.``) load as ``faceptor.``."""
    import shutil

    from safetensors.torch import load_file, save_file

    output_a, _ = uninterrupted
    earlier = tmp_path / "checkpoint-3"
    shutil.copytree(output_a / "checkpoint-3", earlier)
    weights = next(p for p in earlier.iterdir() if p.suffix == ".safetensors")
    state = load_file(weights)
    assert any(key.startswith("faceptor.") for key in state)
    save_file({("model." + key[len("faceptor."):] if key.startswith("faceptor.") else key): value
               for key, value in state.items()}, weights, metadata={"format": "pt"})
    config = parse_config(run_config(data, tmp_path / "out"))
    current, resumed = FaceptorTrainer(config), FaceptorTrainer(config)
    current.resume(str(output_a / "checkpoint-3"))
    resumed.resume(str(earlier))
    assert resumed.step == current.step == 3
    a, b = current.module.state_dict(), resumed.module.state_dict()
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0, msg=name)
    # and a run's freeze patterns written for those names still mean the same parameters
    legacy = run_config(data, tmp_path / "out")
    legacy["run"].update(freeze=["model.encoder."], trainable=["model.decoder", "classifiers."])
    run = parse_config(legacy).run
    assert run.freeze == ["faceptor.encoder."] and run.trainable == ["faceptor.decoder", "classifiers."]


def test_periodic_evaluation_without_a_protocol_uses_the_task_types_metric(data, tmp_path, capsys):
    config = run_config(data, tmp_path / "plain_eval", max_steps=2, save_steps=None, eval_steps=2, eval_limit=4)
    config["tasks"]["affect_rafdb"].update(eval_dataset=str(data / "faces"))
    train(config)
    evaluation = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"step"')]
    assert evaluation and "eval/affect_rafdb/accuracy" in evaluation[-1], evaluation


@pytest.mark.parametrize("change, error, message", [
    (lambda c: c["run"].update(max_step=3), TrainingConfigError, r"unknown key 'max_step' \(did you mean"),
    (lambda c: c["tasks"]["affect_rafdb"].update(dataset="/nonexistent/rafdb"), TaskDataError,
     r"task 'affect_rafdb': dataset '/nonexistent/rafdb'"),
    (lambda c: c["tasks"]["affect_rafdb"].update(dataset=c["tasks"]["align_tiny"]["dataset"]), TaskDataError,
     r"affect_rafdb.*lacks column\(s\) \['expression'\]"),
    (lambda c: c["tasks"].update(nope_x={"dataset": c["tasks"]["affect_rafdb"]["dataset"]}), TrainingConfigError,
     "unknown task type"),
    (lambda c: c["model"].update(preset="huge"), TrainingConfigError, "model: give exactly one"),
])
def test_bad_configs_fail_before_training(data, tmp_path, change, error, message):
    config = run_config(data, tmp_path / "bad")
    change(config)
    with pytest.raises(error, match=message):
        FaceptorTrainer(parse_config(config))


def test_labels_out_of_range_name_task_and_column(data, tmp_path):
    rows = 4
    images = [np.zeros((32, 32, 3), dtype=np.uint8)] * rows
    Dataset.from_dict({"image": [Image().encode_example(i) for i in images], "face_box": [None] * rows,
                       "face_keypoints": [None] * rows, "landmarks": [[[1.0, 2.0]] * 3] * rows},
                      features=Features({**_geometry(0), "landmarks": Array2D((3, 2), "float32")})
                      ).save_to_disk(tmp_path / "three_points")
    config = run_config(data, tmp_path / "bad")
    config["tasks"]["align_tiny"]["dataset"] = str(tmp_path / "three_points")
    with pytest.raises(Exception, match=r"align_tiny.*landmarks"):
        FaceptorTrainer(parse_config(config))


@contextmanager
def non_finite_losses(*type_names):
    """The losses of ``type_names`` return NaN while the block runs (the registry's own losses afterwards)."""
    originals = {name: TASK_TYPES[name].loss for name in type_names}

    def poisoned(original):
        return lambda task, raw, targets, state: original(task, raw, targets, state) * float("nan")

    for name, original in originals.items():
        attach_task_part(name, "loss", poisoned(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            attach_task_part(name, "loss", original)


def test_non_finite_loss_stops_with_step_and_task_or_is_skipped(data, tmp_path):
    config = run_config(data, tmp_path / "nan", max_steps=2, save_steps=None)
    trainer = FaceptorTrainer(parse_config(config))
    with non_finite_losses("affect"), pytest.raises(
            TrainingError, match=r"step 0: non-finite loss in task\(s\) \['affect_rafdb'\]"):
        trainer.train()
    config["run"]["on_nonfinite"] = "skip"
    config["run"]["output_dir"] = str(tmp_path / "nan_skip")
    trainer = FaceptorTrainer(parse_config(config))
    before = trainer.weights_checksum()
    with non_finite_losses("recog", "affect", "align"):
        trainer.train()
    assert trainer.skipped_steps == 2 and trainer.weights_checksum() == before


@pytest.mark.slow
def test_two_cpu_processes_stay_in_step(data, tmp_path):
    config = run_config(data, tmp_path / "ddp", max_steps=4, save_steps=2)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    command, env = accelerate_launch("-m", "faceptor_hf.training.train", str(path))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    summary = json.loads((tmp_path / "ddp" / "training_summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["weights_checksum_per_process"][0] == summary["weights_checksum_per_process"][1]
    # each process drew its own samples: 4 steps x batch 4 per process of the 12-row expression set
    assert summary["samples_per_task"]["affect_rafdb"] == 16
    saved = set(os.listdir(tmp_path / "ddp" / "checkpoint-4"))
    assert {"random_states_0.pkl", "random_states_1.pkl", "trainer_state.json"} <= saved


RECIPES = Path(__file__).parent.parent / "examples" / "training"


def test_recipes_are_valid_and_follow_the_official_runs():
    from faceptor_hf.training.config import load_config
    from faceptor_hf.training.losses import official_loss_weights

    recipes = {path.stem: load_config(str(path)) for path in RECIPES.glob("*.yaml")}
    assert set(recipes) == {"faceptor_base", "faceptor_full_stage1", "faceptor_full_stage2_rafdb", "naive_faceptor"}
    base = recipes["faceptor_base"]
    assert {t.name: t.batch_size for t in base.tasks} == {
        "recog_ms1mv3": 128, "age_morph2": 32, "biattr_celeba": 32, "affect_affectnet": 32, "affect_rafdb": 8,
        "parsing_celebam": 2, "align_300w": 2}
    assert official_loss_weights([t.name for t in base.tasks], recipe="base") == {
        "recog_ms1mv3": 5, "age_morph2": 6, "biattr_celeba": 2, "affect_affectnet": 4, "affect_rafdb": 1,
        "parsing_celebam": 100, "align_300w": 1000}
    full = recipes["faceptor_full_stage1"]
    assert len(full.tasks) == 13 and sum(t.batch_size for t in full.tasks) == 64 + 16 + 4 + 16 + 16 + 4 + 4 + 6
    assert sum(official_loss_weights([t.name for t in full.tasks], recipe="full").values()) == pytest.approx(1222)
    stage2 = recipes["faceptor_full_stage2_rafdb"]
    assert stage2.run.trainable == ["layer_attention"] and stage2.model["overrides"]["layer_attention_levels"] == [
        1, 3, 5, 7, 9]
    naive = recipes["naive_faceptor"]
    assert naive.run.encoder_lr_multiplier * naive.run.learning_rate == pytest.approx(5e-5)
    for recipe in recipes.values():
        assert recipe.run.max_grad_norm == 5.0 and recipe.run.weight_decay == 0.05 and recipe.run.seed == 2048


@pytest.mark.slow
def test_the_new_task_example_trains_and_serves_its_task(tmp_path):
    result = subprocess.run([sys.executable, str(RECIPES / "new_task_mouth_covered.py"), "--tiny", "--samples", "8",
                             "--steps", "2", "--output", str(tmp_path / "mouth")],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, HF_DATASETS_CACHE=str(tmp_path / "cache")))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "mouth_covered accuracy on 8 generated test faces" in result.stdout
    config = json.loads((tmp_path / "mouth" / "config.json").read_text())
    assert {"name": "mouth_covered", "type": "classification"}.items() <= config["tasks"][-1].items()


def test_accumulation_checkpointing_bf16_tensorboard_and_protocol_evaluation(data, tmp_path, capsys):
    config = run_config(data, tmp_path / "options", max_steps=2, save_steps=None, gradient_accumulation_steps=2,
                        gradient_checkpointing=True, precision="bf16", report_to="tensorboard", eval_steps=2,
                        eval_limit=6)
    config["tasks"]["affect_rafdb"].update(eval_dataset=str(data / "faces"), eval_protocol="rafdb")
    trainer = train(config)
    assert trainer.consumed["affect_rafdb"] == 2 * 2 * 4  # steps x micro-batches x batch size
    assert trainer.model.is_activation_checkpointing
    evaluation = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"step"')]
    assert evaluation and "eval/affect_rafdb/accuracy" in evaluation[-1]
    assert list((tmp_path / "options").rglob("events.out.tfevents.*"))


def test_task_datasets_open_from_every_prepared_layout(tmp_path):
    from faceptor_hf.training.datasets import open_dataset

    table = Dataset.from_dict({"a": [1, 2, 3]})
    for split in ("train", "test"):  # prepare-data --format parquet with several splits
        (tmp_path / "prepared" / split).mkdir(parents=True)
        table.to_parquet(str(tmp_path / "prepared" / split / "data-00000-of-00001.parquet"))
    (tmp_path / "snapshot" / "data").mkdir(parents=True)  # a Hub snapshot's layout
    table.select(range(2)).to_parquet(str(tmp_path / "snapshot" / "data" / "train-00000-of-00001.parquet"))
    assert len(open_dataset("t", str(tmp_path / "prepared"), "test")) == 3
    assert len(open_dataset("t", str(tmp_path / "snapshot"), "train")) == 2
    assert len(open_dataset("t", str(tmp_path / "prepared" / "train" / "*.parquet"), "train")) == 3
    with pytest.raises(TaskDataError, match=r"has no split 'valid'; splits: test, train"):
        open_dataset("t", str(tmp_path / "prepared"), "valid")


def test_loss_weights_come_from_the_model_tasks_and_the_run_overrides_them(data, tmp_path):
    config = run_config(data, tmp_path / "weights", max_steps=2, save_steps=None)
    config["model"]["config"]["tasks"] = [{"name": "recog_ms1mv3", "embedding_size": 8, "loss_weight": 5.0},
                                          {"name": "affect_rafdb", "loss_weight": 1.5},
                                          {"name": "align_tiny", "type": "align", "num_queries": 4}]
    trainer = train(config)  # align_tiny: loss_weight 10 in the run
    assert trainer.weights == {"recog_ms1mv3": 5.0, "affect_rafdb": 1.5, "align_tiny": 10.0}
    saved = AutoModel.from_pretrained(tmp_path / "weights").config
    assert {t.name: t.loss_weight for t in saved.tasks} == trainer.weights  # what it was trained with
    again = run_config(data, tmp_path / "again", max_steps=2, save_steps=None)
    again["model"] = {"pretrained": str(tmp_path / "weights")}
    del again["tasks"]["align_tiny"]["loss_weight"]
    again["tasks"]["affect_rafdb"]["loss_weight"] = 3.0
    assert FaceptorTrainer(parse_config(again)).weights == {"recog_ms1mv3": 5.0, "affect_rafdb": 3.0,
                                                            "align_tiny": 10.0}


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("change, fragments", [
    (lambda c, d: c["run"].update(max_step=3), ["unknown key 'max_step'", "config.yaml"]),
    (lambda c, d: c["tasks"]["affect_rafdb"].update(batch_size="eight"), ["tasks.affect_rafdb.batch_size", "int"]),
    (lambda c, d: c["tasks"]["affect_rafdb"].update(dataset=str(d / "marks")), ["affect_rafdb", "'expression'"]),
    (lambda c, d: c["tasks"]["align_tiny"].update(dataset=str(d / "three_points")),
     ["task 'align_tiny', column 'landmarks', row 0", "3 landmarks for a task with 4 points"]),
    (lambda c, d: c["tasks"]["align_tiny"].update(num_queries=3, type="align"), ["tasks.align_tiny", "other fields"]),
    (lambda c, d: c["model"].update(encoder_init=str(d / "nope.pth")), ["model.encoder_init", "nope.pth"]),
    (lambda c, d: c["tasks"]["affect_rafdb"].update(eval_dataset=str(d / "faces"), eval_protocol="nowhere"),
     ["tasks.affect_rafdb.eval_protocol", "nowhere"]),
    (lambda c, d: c["tasks"]["affect_rafdb"].update(eval_dataset=str(d / "marks"), eval_protocol="rafdb"),
     ["evaluation dataset", "'expression'"]),
    (lambda c, d: c["tasks"]["affect_rafdb"].update(eval_dataset=str(d / "ids")), ["evaluation dataset", "lacks"]),
])
@pytest.mark.parametrize("entry", ["faceptor-hf", "module"])
def test_every_user_mistake_is_one_error_line(data, tmp_path, capsys, change, fragments, entry):
    from faceptor_hf.commands import main as cli
    from faceptor_hf.training.train import main as module_main

    config = run_config(data, tmp_path / "out")
    change(config, data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    code = cli(["train", str(path)]) if entry == "faceptor-hf" else module_main([str(path)])
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured.err[-2000:]
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert not (tmp_path / "out").exists()  # nothing started


def test_command_line_overrides_meet_the_yaml_checks(data, tmp_path, capsys):
    from faceptor_hf.commands import main as cli

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(run_config(data, tmp_path / "out"), sort_keys=False))
    assert cli(["train", str(path), "--max-steps", "0"]) == 2
    assert _error_lines(capsys.readouterr().err) == [f"error: {path}: run.max_steps must be at least 1"]
    assert cli(["train", str(path), "--max-steps", "3", "--output-dir", str(tmp_path / "over"), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["steps"] == 3 and plan["output_dir"] == str(tmp_path / "over") and not (tmp_path / "over").exists()


@pytest.mark.slow
def test_an_evaluation_mistake_stops_every_process_at_start(data, tmp_path):
    config = run_config(data, tmp_path / "ddp_bad", max_steps=4, save_steps=None, eval_steps=2)
    config["tasks"]["affect_rafdb"].update(eval_dataset=str(data / "marks"), eval_protocol="rafdb")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    command, env = accelerate_launch("-m", "faceptor_hf.training.train", str(path))
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "evaluation dataset" in lines[0], result.stderr[-3000:]
    assert not (tmp_path / "ddp_bad" / "checkpoint-2").exists()
