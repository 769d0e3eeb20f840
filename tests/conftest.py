"""Shared helpers: tiny configurations that keep every test on CPU and fast."""

import os
from pathlib import Path

import pytest
import torch

from faceptor_hf import FaceptorConfig

IMAGES = Path(__file__).parent.parent / "examples" / "images"
SIX_TASKS = ["recog_ms1mv3", "age_morph2", "biattr_celeba", "affect_affectnet", "parsing_celebam", "align_300w"]

TINY_ENCODER = dict(
    hidden_size=24, num_hidden_layers=4, num_attention_heads=2, intermediate_size=48, patch_size=16,
    position_grid_size=8, drop_path_rate=0.1, recognition_layer=3, decoder_levels=[3],
)
TINY_DECODER = dict(decoder_hidden_size=16, decoder_num_layers=2, decoder_num_attention_heads=2, decoder_ffn_dim=32)
TINY_TASKS = [
    {"name": "recog_ms1mv3", "embedding_size": 8},
    {"name": "age_tiny", "type": "age", "num_queries": 6},
    "biattr_celeba",
    "affect_affectnet",
    {"name": "parsing_tiny", "type": "parsing", "num_queries": 3},
    {"name": "align_tiny", "type": "align", "num_queries": 4},
]


def tiny_config(head_type="faceptor", layer_attention=False, **overrides) -> FaceptorConfig:
    kwargs = dict(TINY_ENCODER, **TINY_DECODER, tasks=TINY_TASKS, head_type=head_type)
    if layer_attention:
        kwargs["layer_attention_levels"] = [0, 1, 2]
    if head_type == "naive":
        kwargs.update(naive_value_levels=[0, 1, 2, 3], naive_dense_levels=[0, 1, 2, 3], naive_value_hidden_size=32,
                      naive_dense_channels=8)
    kwargs.update(overrides)
    return FaceptorConfig(**kwargs)


VARIANTS = {
    "faceptor": dict(head_type="faceptor"),
    "layer_attention": dict(head_type="faceptor", layer_attention=True),
    "naive": dict(head_type="naive"),
}


@pytest.fixture(params=list(VARIANTS))
def variant_config(request):
    return tiny_config(**VARIANTS[request.param])


def accelerate_launch(*arguments: str, processes: int = 2) -> tuple[list[str], dict]:
    """The command and environment of ``accelerate launch`` with ``processes`` CPU processes on a free port."""
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), *arguments]
    return command, dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")


def tiny_inputs(batch=2, seed=0, dense_size=64):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, 112, 112, generator=generator),
            torch.randn(batch, 3, dense_size, dense_size, generator=generator))


@pytest.fixture(autouse=True, scope="session")
def datasets_cache_in_tmp(tmp_path_factory):
    """Datasets built by tests (converters re-read their fixtures every call) go to a temporary cache, not the
    user's ~/.cache/huggingface/datasets."""
    import datasets

    previous = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("hf_datasets_cache")
    yield
    datasets.config.HF_DATASETS_CACHE = previous


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved tiny model (the six-task analysis) with its processor: a folder the pipeline and the CLI load."""
    from faceptor_hf import FaceptorImageProcessor, FaceptorModel

    folder = tmp_path_factory.mktemp("tiny_faceptor")
    torch.manual_seed(0)
    FaceptorModel(tiny_config(tasks=SIX_TASKS)).eval().save_pretrained(folder)
    FaceptorImageProcessor().save_pretrained(folder)
    return folder


# ---- slow tests: subprocess round trips (remote code, Hub server, torchrun), torch.compile -------------------------
# The default run leaves them out to stay quick while developing; CI and README's test command pass --run-slow.
def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow (what CI runs)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test that takes seconds (subprocesses, servers, compilation)")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        # `-n N` (what CI runs): N workers share the cores. torch's default of one OpenMP thread per core in every
        # worker oversubscribes them, and spinning OpenMP threads then slowed training tests ten-fold; each worker,
        # and the processes it starts, get their share of the cores instead.
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ["OMP_NUM_THREADS"] = threads
        torch.set_num_threads(int(threads))


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
