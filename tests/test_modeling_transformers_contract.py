"""What a transformers user relies on beyond the forward pass: weight initialisation of fresh models, missing keys and
new tasks; ``output_loading_info``; ``output_attentions``; input embeddings for adapters.

transformers' own common model tests (tests/test_modeling_common.py of its release) cover the same ground for
single-task models; where one of their expectations does not fit a multi-task vision model, the test here that
covers the same ground says why.
"""

import torch

from conftest import tiny_config
from faceptor_hf import FaceptorModel

torch.set_num_threads(2)


def build(config, seed=0):
    torch.manual_seed(seed)
    return FaceptorModel(config).eval()


def test_output_loading_info(tmp_path):
    """Three of transformers' common tests load with ``output_loading_info=True``; the untrained flag must follow
    the model inside the returned pair."""
    model = build(tiny_config())
    model.is_untrained = False
    model.save_pretrained(tmp_path)
    loaded, info = FaceptorModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, FaceptorModel) and not loaded.is_untrained
    assert set(info) >= {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
