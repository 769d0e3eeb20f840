#!/bin/bash
# Faceptor training on several machines under SLURM: one `accelerate launch` per node, which starts that node's
# GPU processes; docs/training.md ("Several machines") explains the options.
#
#   sbatch --nodes 2 examples/training/slurm_multinode.sh examples/training/faceptor_base.yaml
#   sbatch --nodes 2 examples/training/slurm_multinode.sh CONFIG.yaml --resume-from-checkpoint latest
#
# Without a shared filesystem, set `run.save_on_each_node: true` in the config: each node keeps its part of every
# checkpoint on its own disk, and `latest` resumes from the newest step every node completed.
#SBATCH --job-name=faceptor
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --output=faceptor-%j.log

set -euo pipefail
CONFIG=${1:?usage: sbatch slurm_multinode.sh CONFIG.yaml [faceptor-hf train options]}
shift

GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
NUM_PROCESSES=$((SLURM_NNODES * GPUS_PER_NODE))
# The first host of the allocation runs the main process; the others connect to it. (Not `| head -n 1`: under
# pipefail, scontrol killed by SIGPIPE once head has its line would fail the job.)
HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
MAIN_PROCESS_IP=${HOSTS%%$'\n'*}
MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-29500}

# One task per node; SLURM_NODEID (0 .. nodes-1) is read inside each task, hence the single quotes.
srun --kill-on-bad-exit=1 bash -c 'accelerate launch --multi_gpu \
    --num_machines "$SLURM_NNODES" --machine_rank "$SLURM_NODEID" --num_processes '"$NUM_PROCESSES"' \
    --main_process_ip '"$MAIN_PROCESS_IP"' --main_process_port '"$MAIN_PROCESS_PORT"' \
    -m faceptor_hf.training.train "$@"' faceptor "$CONFIG" "$@"
