"""Golden parity with the official code and the converter's error paths.

``fixtures/golden/*/checkpoint_rank0_iter_50000.pth.tar`` are tiny official-format checkpoints written by the
official Faceptor classes (random weights, perturbed BatchNorm statistics; see fixtures/golden/README.md) and
``expected.safetensors`` holds the official raw head outputs for ``inputs.safetensors``.
"""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

from faceptor_hf import FaceptorImageProcessor, FaceptorModel
from faceptor_hf.configuration_faceptor import official_loss_weights
from faceptor_hf.convert_faceptor_original_to_hf import (
    CONVERSION_RULES,
    ConversionError,
    convert_checkpoint,
    convert_state_dict,
    infer_config,
    load_official_state_dict,
    matching_rules,
)

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
VARIANTS = {"faceptor_stage1": "stage 1", "faceptor_stage2": "stage 2", "naive": "Naive Faceptor"}


def golden_inputs():
    raw = load_file(GOLDEN / "inputs.safetensors")
    small = (raw["pixel_values_uint8"].float() / 255 - 0.5) / 0.5
    dense = (raw["dense_pixel_values_uint8"].float() / 255 - CLIP_MEAN) / CLIP_STD
    return small, dense


def golden_checkpoint(name):
    return str(GOLDEN / name / "checkpoint_rank0_iter_50000.pth.tar")


def golden_overrides(name):
    return json.loads((GOLDEN / name / "meta.json").read_text())["config_overrides"]


def convert_golden(name, output_dir=None):
    return convert_checkpoint(golden_checkpoint(name), output_dir, golden_overrides(name))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_golden_parity_with_official_code(name):
    model, variant = convert_golden(name)
    assert VARIANTS[name] in variant
    assert model.is_untrained is False  # converted weights were loaded with load_state_dict
    expected = load_file(GOLDEN / name / "expected.safetensors")
    small, dense = golden_inputs()
    with torch.no_grad():
        out = model(pixel_values=small, dense_pixel_values=dense)
    checked = 0
    for key, reference in expected.items():
        task, _, field = key.partition(".")
        ours = out.landmarks[task] if field == "landmarks" else out.task_logits[task]
        assert ours.shape == reference.shape, key
        relative = ((ours - reference).abs().max() / reference.abs().max()).item()
        assert relative <= 1e-4, f"{key}: relative max-abs difference {relative:.2e}"
        checked += 1
    assert checked == len(model.config.tasks) + 1  # every task plus the decoded landmarks


def test_batchnorm_running_statistics_are_used():
    model, _ = convert_golden("faceptor_stage1")
    head = model.recognition_heads["recog_ms1mv3"]
    assert head.batch_norm1.num_batches_tracked.item() == 1234  # the fixture's marker value
    assert not torch.allclose(head.batch_norm1.running_var, torch.ones_like(head.batch_norm1.running_var))


def test_converted_folder_loads_with_auto_classes(tmp_path):
    convert_golden("faceptor_stage2", str(tmp_path))
    names = {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "config.json").read_text()).get("untrained") is not True
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_faceptor.py"} <= names
    model = AutoModel.from_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(model, FaceptorModel) and isinstance(processor, FaceptorImageProcessor)
    assert model.config.layer_attention_levels == [1, 3, 5, 7, 9]
    assert processor.image_mean == [0.5] * 3 and processor.dense_image_std == [0.26862954, 0.26130258, 0.27577711]
    expected = load_file(GOLDEN / "faceptor_stage2" / "expected.safetensors")
    small, dense = golden_inputs()
    with torch.no_grad():
        out = model(pixel_values=small, dense_pixel_values=dense)
    torch.testing.assert_close(out.task_logits["age_tiny"], expected["age_tiny"], atol=1e-4, rtol=1e-4)


def test_rule_table_is_total_and_unambiguous():
    """Every key of every golden checkpoint matches exactly one rule, conversion consumes all of them, and every
    rule is needed by some golden checkpoint."""
    used = set()
    for name in VARIANTS:
        state = load_official_state_dict(golden_checkpoint(name))
        config, _ = infer_config(state, golden_overrides(name))
        produced = 0
        for key in state:
            matches = matching_rules(key)
            assert len(matches) == 1, f"{name}: {key} matches {len(matches)} rules"
            rule = matches[0][0]
            used.add(rule)
            produced += len(rule.targets)
        assert len(convert_state_dict(state, config)) == produced
    assert [rule.pattern.pattern for rule in CONVERSION_RULES if rule not in used] == []


def test_error_unknown_key_is_named(tmp_path):
    source = torch.load(golden_checkpoint("naive"), weights_only=True)
    state = dict(source["state_dict"])
    unknown = "backbone_module.visual.transformer.resblocks.0.ls_1.gamma"
    state["module." + unknown] = torch.zeros(4)
    with pytest.raises(ConversionError, match=r"unexpected key \['" + unknown.replace(".", r"\.") + r"'\]"):
        convert_checkpoint(_write(tmp_path / "extra.pth", {"state_dict": state}), None, golden_overrides("naive"))
    for index in range(7):
        state[f"module.heads_module.heads.age.extra{index}.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"unexpected keys \[.*\] and 3 more") as error:
        convert_checkpoint(_write(tmp_path / "extras.pth", {"state_dict": state}), None, golden_overrides("naive"))
    assert unknown in str(error.value)


def test_command_line_conversion(tmp_path):
    meta = json.loads((GOLDEN / "naive" / "meta.json").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "faceptor_hf.cli", "convert", "--checkpoint",
         str(GOLDEN / "naive" / "checkpoint_rank0_iter_50000.pth.tar"), "--output", str(tmp_path / "out"),
         "--config-overrides", json.dumps(meta["config_overrides"])],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Naive Faceptor" in result.stdout
    assert (tmp_path / "out" / "model.safetensors").exists()


def _write(path, obj):
    torch.save(obj, path)
    return str(path)


def test_error_missing_and_empty_files(tmp_path):
    with pytest.raises(ConversionError, match="no such file"):
        convert_checkpoint(str(tmp_path / "absent.pth.tar"))
    (tmp_path / "empty.pth.tar").write_bytes(b"")
    with pytest.raises(ConversionError, match="empty"):
        convert_checkpoint(str(tmp_path / "empty.pth.tar"))


def test_error_truncated_checkpoint(tmp_path):
    data = (GOLDEN / "faceptor_stage1" / "checkpoint_rank0_iter_50000.pth.tar").read_bytes()
    (tmp_path / "cut.pth.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="cannot be read as a PyTorch checkpoint"):
        convert_checkpoint(str(tmp_path / "cut.pth.tar"))


def test_error_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, this is not a checkpoint")
    with pytest.raises(ConversionError, match="cannot be read"):
        convert_checkpoint(str(tmp_path / "notes.txt"))


class _Executable:
    def __reduce__(self):
        return (print, ("pickled code must never run",))


def test_error_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _Executable()}, handle)
    with pytest.raises(ConversionError, match="cannot be read"):
        convert_checkpoint(str(path))


def test_error_foreign_checkpoint(tmp_path):
    path = _write(tmp_path / "resnet.pth", {"state_dict": {"conv1.weight": torch.zeros(4, 3, 3, 3)}})
    with pytest.raises(ConversionError, match="foreign checkpoint"):
        convert_checkpoint(path)
    path = _write(tmp_path / "list.pth", [1, 2, 3])
    with pytest.raises(ConversionError, match="expected a dict"):
        convert_checkpoint(path)


def test_error_incomplete_or_altered_checkpoint(tmp_path):
    source = torch.load(GOLDEN / "faceptor_stage1" / "checkpoint_rank0_iter_50000.pth.tar", weights_only=True)
    state = dict(source["state_dict"])
    state.pop("module.heads_module.decoder.transformer_ffn_layers.1.linear2.weight")
    with pytest.raises(ConversionError, match=r"incomplete.*decoder\.layers\.1\.fc2\.weight"):
        convert_checkpoint(_write(tmp_path / "missing.pth", {"state_dict": state}), None,
                           {"num_attention_heads": 2, "decoder_num_attention_heads": 2})
    state = dict(source["state_dict"])
    state["module.heads_module.decoder.extra_thing.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match="unexpected key"):
        convert_checkpoint(_write(tmp_path / "extra.pth", {"state_dict": state}), None,
                           {"num_attention_heads": 2, "decoder_num_attention_heads": 2})
    state = dict(source["state_dict"])
    state["module.heads_module.interpreters.value.fc.weight"] = torch.zeros(1, 5)
    with pytest.raises(ConversionError, match="value_head.fc.weight has shape"):
        convert_checkpoint(_write(tmp_path / "shape.pth", {"state_dict": state}), None,
                           {"num_attention_heads": 2, "decoder_num_attention_heads": 2})


def test_converted_checkpoints_carry_their_recipes_loss_weights():
    model, _ = convert_golden("faceptor_stage1")
    weights = {task.name: task.loss_weight for task in model.config.tasks}
    assert weights == official_loss_weights(model.config.task_names)
    naive, _ = convert_golden("naive")
    assert {t.name: t.loss_weight for t in naive.config.tasks} == official_loss_weights(naive.config.task_names,
                                                                                         recipe="naive")
