"""Every shipped recipe runs as a user runs it: each YAML of ``examples/training/`` unchanged except the model size,
the batch sizes, the step counts and the paths (datasets written by ``faceptor-hf prepare-data`` from native-format
fixtures, a tiny random FaRL checkpoint as ``encoder_init``), with every default on — tensorboard, DataLoader
workers, augmentation at full magnitude, the recipe's precision and SyncBatchNorm settings — once in one process
(``faceptor-hf train``) and once under ``accelerate launch --num_processes 2``. Each must exit 0 and write its model.

Regressions caught here: RandAugment's posterize at magnitude 10 killed the DataLoader of any 112-px task, and every
multi-process run with the default ``report_to: tensorboard`` exited 1 after saving (a collective after the process
group was destroyed)."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModel

from faceptor_hf.commands import main as cli

from conftest import accelerate_launch
from test_data_affect_attributes import affectnet_native, celeba_release, ferplus_release, rafdb_native
from test_data_landmarks import write_root_300w, write_root_aflw, write_root_cofw, write_root_wflw
from test_data_parsing_age import write_celebamask_hq, write_lapa, write_morph2, write_utkface
from test_data_recognition import write_ms1mv3
from test_encoder_init import farl_state

RECIPES = Path(__file__).parent.parent / "examples" / "training"
# A ViT of the recipes' depth (12 blocks, so every level they name exists) but 24 wide.
TINY_MODEL = dict(hidden_size=24, num_attention_heads=2, intermediate_size=48, decoder_hidden_size=16,
                  decoder_num_layers=2, decoder_num_attention_heads=2, decoder_ffn_dim=32, naive_value_hidden_size=32,
                  naive_dense_channels=8)
NATIVE_WRITERS = {
    "ms1mv3": lambda root: (write_ms1mv3(str(root)), root)[1], "morph2": write_morph2, "utkface": write_utkface,
    "celeba": celeba_release, "affectnet": affectnet_native, "rafdb": rafdb_native, "ferplus": ferplus_release,
    "celebamask-hq": write_celebamask_hq, "lapa": write_lapa, "300w": write_root_300w, "cofw": write_root_cofw,
    "wflw": write_root_wflw, "aflw": write_root_aflw,
}
# Splits the recipes read (the fixtures leave some other splits empty on purpose).
SPLITS = {"wflw": ["train"], "aflw": ["train"]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """data/<name> for every dataset a recipe names (prepare-data from the native fixtures; the fixtures' own
    deliberately bad samples skipped) and checkpoints/FaRL-tiny.pth."""
    root = tmp_path_factory.mktemp("recipes")
    for name, writer in NATIVE_WRITERS.items():
        native = root / "native" / name
        native.mkdir(parents=True)
        data_dir = writer(native)
        command = ["prepare-data", name, "--data-dir", str(data_dir), "--output", str(root / "data" / name),
                   "--skip-bad"]
        if name in SPLITS:
            command += ["--split", *SPLITS[name]]
        assert cli(command) == 0, name
    (root / "checkpoints").mkdir()
    torch.save({"state_dict": farl_state(layers=12)}, root / "checkpoints" / "FaRL-tiny.pth")
    return root


def smoke_config(recipe: str, root: Path, output: Path, pretrained: Path | None = None) -> Path:
    """The recipe with only the model size, batch sizes, step counts and paths changed; written next to output."""
    config = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text())
    model = config["model"]
    if "pretrained" in model:
        model["pretrained"] = str(pretrained)
    else:
        model["overrides"] = {**model.get("overrides", {}), **TINY_MODEL}
        model["encoder_init"] = str(root / "checkpoints" / "FaRL-tiny.pth")
    for task in config["tasks"].values():
        for key in ("dataset", "eval_dataset"):
            if key in task:
                task[key] = str(root / task[key])
        task["batch_size"] = min(task["batch_size"], 2)
    run = config["run"]
    steps = 2
    run.update(output_dir=str(output), max_steps=steps, warmup_steps=min(run.get("warmup_steps", 0), 1))
    for key in ("save_steps", "eval_steps", "logging_steps"):  # step counts shrink with max_steps
        if key in run:
            run[key] = steps
    path = output.parent / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_in_one_process(config: Path, capsys) -> str:
    code = cli(["train", str(config)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return captured.out


def run_in_two_processes(config: Path) -> str:
    command, env = accelerate_launch("-m", "faceptor_hf.training.train", str(config))
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-5000:]
    return result.stdout


def check_output(folder: Path, processes: int, recipe: str):
    summary = json.loads((folder / "training_summary.json").read_text())
    assert summary["steps"] == 2 and summary["processes"] == processes, summary
    assert len(set(summary["weights_checksum_per_process"])) == 1
    model = AutoModel.from_pretrained(folder)
    assert not model.is_untrained and (folder / "preprocessor_config.json").exists()
    assert list(folder.rglob("events.out.tfevents.*")), "tensorboard is the default tracker"
    recipe_tasks = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text())["tasks"]
    for name in recipe_tasks:  # the run's loss weights are recorded with the saved model's tasks
        assert summary["loss_weights"][name] == model.config.get_task(name).loss_weight
    return model


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["faceptor_base", "naive_faceptor"])
def test_recipe_runs_in_one_and_in_two_processes(recipe, workspace, tmp_path, capsys):
    output = tmp_path / recipe
    run_in_one_process(smoke_config(recipe, workspace, output), capsys)
    model = check_output(output, 1, recipe)
    assert model.config.encoder_init["layout"] == "farl" and model.config.drop_path_mode == "token"
    if recipe == "faceptor_base":
        assert model.config.get_task("align_300w").loss_weight == 1000.0
    output_2 = tmp_path / f"{recipe}_ddp"
    run_in_two_processes(smoke_config(recipe, workspace, output_2))
    check_output(output_2, 2, recipe)


@pytest.mark.slow
def test_full_stage1_then_stage2_recipes_run_in_one_and_in_two_processes(workspace, tmp_path, capsys):
    stage1 = tmp_path / "full_stage1"
    run_in_one_process(smoke_config("faceptor_full_stage1", workspace, stage1), capsys)
    check_output(stage1, 1, "faceptor_full_stage1")
    run_in_two_processes(smoke_config("faceptor_full_stage1", workspace, tmp_path / "full_stage1_ddp"))
    check_output(tmp_path / "full_stage1_ddp", 2, "faceptor_full_stage1")
    stage2 = tmp_path / "stage2"
    run_in_one_process(smoke_config("faceptor_full_stage2_rafdb", workspace, stage2, pretrained=stage1), capsys)
    model = check_output(stage2, 1, "faceptor_full_stage2_rafdb")
    assert model.config.layer_attention_levels == [1, 3, 5, 7, 9]
    run_in_two_processes(smoke_config("faceptor_full_stage2_rafdb", workspace, tmp_path / "stage2_ddp",
                                      pretrained=stage1))
    check_output(tmp_path / "stage2_ddp", 2, "faceptor_full_stage2_rafdb")


@pytest.mark.slow
def test_dry_run_prints_the_plan_of_the_base_recipe(workspace, tmp_path, capsys):
    config = smoke_config("faceptor_base", workspace, tmp_path / "plan")
    assert cli(["train", str(config), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not (tmp_path / "plan").exists()  # nothing trained, nothing written
    tasks = {task["name"]: task for task in plan["tasks"]}
    assert list(tasks) == ["recog_ms1mv3", "age_morph2", "biattr_celeba", "affect_affectnet", "affect_rafdb",
                           "parsing_celebam", "align_300w"]
    assert {name: task["loss_weight"] for name, task in tasks.items()} == {
        "recog_ms1mv3": 5.0, "age_morph2": 6.0, "biattr_celeba": 2.0, "affect_affectnet": 4.0, "affect_rafdb": 1.0,
        "parsing_celebam": 100.0, "align_300w": 1000.0}
    assert tasks["affect_rafdb"]["evaluation"]["protocol"] == "rafdb" and tasks["recog_ms1mv3"]["identities"] == 3
    assert all(task["rows"] > 0 and task["batch_size"] <= 2 for task in tasks.values())
    groups = {group["name"]: group for group in plan["parameter_groups"]}
    assert groups["encoder"]["peak_learning_rate"] == pytest.approx(5e-5)
    assert groups["heads"]["peak_learning_rate"] == groups["classifiers"]["peak_learning_rate"] == pytest.approx(5e-4)
    assert plan["model"]["encoder_init"]["layout"] == "farl" and plan["model"]["drop_path"]["mode"] == "token"
    assert plan["model"]["fresh_tensors"] < sum(group["tensors"] for group in plan["parameter_groups"])
    assert plan["precision"] == "fp16_grads" and plan["processes"] == 1 and plan["steps"] == 2
