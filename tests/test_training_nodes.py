"""Training on two "machines" of one process each, as one machine can simulate them: two ``accelerate launch
--num_machines 2 --machine_rank 0/1`` on loopback, each in its own working directory, so the relative
``run.output_dir`` is a separate disk per node (``run.save_on_each_node: true``). Each node finishes its own part of
every checkpoint; ``--resume-from-checkpoint latest`` takes the newest step complete on both nodes and ends with the
uninterrupted run's weights. The periodic evaluation is split over the nodes and gives the one-process numbers. In
one process, with the other node's answer simulated: a node missing its part of a named checkpoint, or no step
complete on every node, is one error naming the nodes and paths."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from datasets import load_from_disk
from transformers import AutoModel

from faceptor_hf.evaluation import evaluate
from faceptor_hf.image_processing_faceptor import FaceptorImageProcessor
from faceptor_hf.training import checkpointing
from faceptor_hf.training.errors import TrainingError

from test_training import run_config, write_datasets


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_nodes(root, *arguments: str, timeout: int = 600) -> list[subprocess.CompletedProcess]:
    """Run ``accelerate launch`` once per node (machine rank 0 and 1, one process each, working directories
    root/node0 and root/node1) and wait for both."""
    port = _free_port()
    runs = []
    for rank in range(2):
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                   "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no", *arguments]
        (root / f"node{rank}").mkdir(exist_ok=True)
        runs.append(subprocess.Popen(command, cwd=root / f"node{rank}", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")))
    results = []
    for process in runs:
        stdout, stderr = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def evaluation_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"step"')]


@pytest.mark.slow
def test_two_nodes_without_a_shared_disk_save_their_parts_and_resume_the_newest_common_step(tmp_path):
    write_datasets(tmp_path)
    config = run_config(tmp_path, "run", max_steps=4, save_steps=2, save_on_each_node=True, eval_steps=4,
                        eval_limit=5)
    config["tasks"]["affect_rafdb"].update(eval_dataset=str(tmp_path / "faces"))
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(config))
    train = ("-m", "faceptor_hf.training.train", str(path))

    first = launch_nodes(tmp_path, *train)
    for run in first:
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    node0, node1 = tmp_path / "node0" / "run", tmp_path / "node1" / "run"
    for step in (2, 4):
        for node, rank in ((node0, 0), (node1, 1)):
            part = set(os.listdir(node / f"checkpoint-{step}"))
            assert {"trainer_state.json", "model.safetensors", "optimizer.bin", f"random_states_{rank}.pkl"} <= part
            assert f"random_states_{1 - rank}.pkl" not in part  # each node holds its own processes' states only
    assert (node0 / "training_summary.json").exists() and not (node1 / "training_summary.json").exists()
    summary = json.loads((node0 / "training_summary.json").read_text())
    assert summary["processes"] == 2 and len(set(summary["weights_checksum_per_process"])) == 1
    trained = AutoModel.from_pretrained(node0)

    # the evaluation at step 4 (5 rows over 2 processes) is printed alike on both nodes, and is the one-process one
    printed = [evaluation_lines(run.stdout) for run in first]
    assert printed[0] and printed[0] == printed[1]
    rows = load_from_disk(str(tmp_path / "faces"))
    alone = evaluate(trained, rows, "affect_rafdb", processor=FaceptorImageProcessor(), batch_size=4, limit=5)
    assert printed[0][-1]["eval/affect_rafdb/accuracy"] == pytest.approx(alone["accuracy"])

    # node 1 was stopped while finishing step 4: latest is step 2 on both, and the resumed run ends where the
    # uninterrupted one did
    os.remove(node1 / "checkpoint-4" / "trainer_state.json")
    resumed = launch_nodes(tmp_path, *train, "--resume-from-checkpoint", "latest")
    for run in resumed:
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
        assert "resumed from run/checkpoint-2 at step 2" in run.stdout
    again = AutoModel.from_pretrained(node0).state_dict()
    for name, tensor in trained.state_dict().items():
        assert torch.equal(tensor, again[name]), name
    assert evaluation_lines(resumed[0].stdout) == printed[0]



class _OneProcess:
    num_processes, process_index = 2, 0


def test_nodes_agree_on_the_checkpoint_or_name_the_node_that_lacks_it(tmp_path, monkeypatch):
    """Node 0 is this process (its disk: tmp_path/node0); node 1's view is what its all_gather contribution says."""
    mine = tmp_path / "node0" / "run"
    for step in (2, 4, 6):
        (mine / f"checkpoint-{step}").mkdir(parents=True)
        (mine / f"checkpoint-{step}" / checkpointing.STATE_FILE).write_text("{}")
    other = {"view": None}

    def all_gather_object(views, own):
        views[0], views[1] = own, other["view"]

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    monkeypatch.setenv("GROUP_RANK", "0")
    other["view"] = (1, "/disk1/run", [2, 4])
    assert checkpointing.agree_on_each_node(_OneProcess(), "latest", str(mine)) == str(mine / "checkpoint-4")
    other["view"] = (1, "/disk1/run", [])
    with pytest.raises(TrainingError, match=r"no checkpoint-<step> is complete on every node \(node 0: .*node0/run "
                                            r"has steps \[2, 4, 6\]; node 1: /disk1/run has steps none\)"):
        checkpointing.agree_on_each_node(_OneProcess(), "latest", str(mine))
    other["view"] = (1, "/disk1/run/checkpoint-6", False)
    named = str(mine / "checkpoint-6")
    with pytest.raises(TrainingError, match=r"has no complete part \(with trainer_state.json\) on "
                                            r"node 1 \(/disk1/run/checkpoint-6\); resume from"):
        checkpointing.agree_on_each_node(_OneProcess(), named, str(mine))
    other["view"] = (1, "/disk1/run/checkpoint-6", True)
    assert checkpointing.agree_on_each_node(_OneProcess(), named, str(mine)) == named


def test_the_slurm_example_launches_one_accelerate_per_node_with_its_rank(tmp_path):
    """``examples/training/slurm_multinode.sh`` with stand-ins for srun (one task per node, SLURM_NODEID set),
    scontrol and accelerate (which prints its arguments)."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    scripts = {"srun": 'shift\nfor node in 0 1; do SLURM_NODEID=$node "$@"; done\n',
               "scontrol": 'printf "gpu-a17\\ngpu-b03\\n"\n',
               "accelerate": 'echo "accelerate $*"\n'}
    for name, body in scripts.items():
        (stubs / name).write_text("#!/bin/bash\n" + body)
        (stubs / name).chmod(0o755)
    script = Path(__file__).parent.parent / "examples" / "training" / "slurm_multinode.sh"
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}", SLURM_NNODES="2", SLURM_GPUS_ON_NODE="4",
               SLURM_JOB_NODELIST="gpu-[a17,b03]")
    result = subprocess.run(["bash", str(script), "my config.yaml", "--resume-from-checkpoint", "latest"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    launched = result.stdout.splitlines()
    assert launched == [f"accelerate launch --multi_gpu --num_machines 2 --machine_rank {node} --num_processes 8 "
                        "--main_process_ip gpu-a17 --main_process_port 29500 -m faceptor_hf.training.train "
                        "my config.yaml --resume-from-checkpoint latest" for node in (0, 1)]
