"""Model tester on tiny configs: contract, round trips, determinism, batch independence, gradients, fast paths."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel

from faceptor_hf import FaceptorConfig, FaceptorModel, heatmap_centroids

from conftest import tiny_config, tiny_inputs

torch.set_num_threads(2)


def build(config, seed=0):
    torch.manual_seed(seed)
    return FaceptorModel(config).eval()


def assert_outputs_close(a, b, atol=1e-5):
    assert a.task_logits.keys() == b.task_logits.keys()
    for name in a.task_logits:
        torch.testing.assert_close(a.task_logits[name], b.task_logits[name], atol=atol, rtol=1e-4, msg=name)


def test_output_contract(variant_config):
    model = build(variant_config)
    x112, x512 = tiny_inputs(dense_size=64)
    with torch.no_grad():
        out = model(pixel_values=x112, dense_pixel_values=x512)
    assert list(out.task_logits) == variant_config.task_names
    shapes = {name: tuple(v.shape) for name, v in out.task_logits.items()}
    assert shapes == {
        "recog_ms1mv3": (2, 8), "age_tiny": (2, 6), "biattr_celeba": (2, 40), "affect_affectnet": (2, 7),
        "parsing_tiny": (2, 3, 16, 16), "align_tiny": (2, 4, 16, 16),
    }
    assert out.landmarks["align_tiny"].shape == (2, 4, 2)
    assert out.task_logits is out["task_logits"]  # the dict is not unpacked into top-level keys
    for value in out.task_logits.values():
        assert torch.isfinite(value).all()


def test_inputs_select_tasks(variant_config):
    model = build(variant_config)
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        only_small = model(pixel_values=x112)
        only_dense = model(dense_pixel_values=x512)
        picked = model(pixel_values=x112, dense_pixel_values=x512, tasks=["align_tiny", "age_tiny"])
    assert list(only_small.task_logits) == ["recog_ms1mv3", "age_tiny", "biattr_celeba", "affect_affectnet"]
    assert list(only_dense.task_logits) == ["parsing_tiny", "align_tiny"]
    assert list(picked.task_logits) == ["align_tiny", "age_tiny"]
    torch.testing.assert_close(picked.task_logits["age_tiny"], only_small.task_logits["age_tiny"], atol=1e-5, rtol=1e-4)


def test_one_decoder_pass_equals_per_task_passes(variant_config):
    model = build(variant_config)
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        joint = model(pixel_values=x112, dense_pixel_values=x512)
        for name in variant_config.task_names:
            alone = model(pixel_values=x112, dense_pixel_values=x512, tasks=[name]).task_logits[name]
            torch.testing.assert_close(alone, joint.task_logits[name], atol=2e-5, rtol=1e-4, msg=name)


def test_batch_independence(variant_config):
    model = build(variant_config)
    x112, x512 = tiny_inputs(batch=3)
    with torch.no_grad():
        batched = model(pixel_values=x112, dense_pixel_values=x512)
        single = model(pixel_values=x112[1:2], dense_pixel_values=x512[1:2])
    for name, value in single.task_logits.items():
        torch.testing.assert_close(value[0], batched.task_logits[name][1], atol=2e-5, rtol=1e-4, msg=name)


def test_deterministic(variant_config):
    """transformers' common test_determinism compares ``outputs[0]`` as a tensor; here it is the dict of task outputs
    (loss is None at inference, see FaceptorOutput), so determinism is checked per task instead."""
    model = build(variant_config)
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        assert_outputs_close(model(pixel_values=x112, dense_pixel_values=x512),
                             model(pixel_values=x112, dense_pixel_values=x512), atol=0)


def test_gradients_reach_every_parameter(variant_config):
    """transformers' common training tests backpropagate ``model(**inputs, labels=...).loss``; FaceptorModel is a
    multi-task base model whose losses live in faceptor_hf.training, so they cannot apply: this test and
    test_gradient_checkpointing_matches backpropagate a loss on the task outputs instead."""
    model = build(variant_config).train()
    x112, x512 = tiny_inputs(batch=3)
    out = model(pixel_values=x112, dense_pixel_values=x512)
    loss = sum(value.float().pow(2).mean() for value in out.task_logits.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert missing == []


def test_gradient_checkpointing_matches(variant_config):
    torch.manual_seed(0)
    config = tiny_config(**{"head_type": variant_config.head_type,
                            "layer_attention": bool(variant_config.layer_attention_levels)}, drop_path_rate=0.0)
    model = build(config).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout | torch.nn.Dropout2d):
            module.p = 0.0
    x112, x512 = tiny_inputs()

    def grads():
        model.zero_grad()
        out = model(pixel_values=x112, dense_pixel_values=x512)
        sum(v.pow(2).mean() for v in out.task_logits.values()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_save_load_round_trip(tmp_path, variant_config):
    model = build(variant_config)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert (tmp_path / "modeling_faceptor.py").exists() and (tmp_path / "configuration_faceptor.py").exists()
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, FaceptorConfig) and config.tasks == variant_config.tasks
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, FaceptorModel) and not loaded.training
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        assert_outputs_close(model(pixel_values=x112, dense_pixel_values=x512),
                             loaded(pixel_values=x112, dense_pixel_values=x512), atol=0)


@pytest.mark.slow
def test_remote_code_load_without_package(tmp_path):
    model = build(tiny_config(layer_attention=True))
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        expected = model(pixel_values=x112, dense_pixel_values=x512).task_logits
    torch.save({"x112": x112, "x512": x512, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["faceptor_hf"] = None  # the package must not be importable
        import torch
        from transformers import AutoModel
        torch.set_num_threads(2)
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        io = torch.load({str(tmp_path / 'io.pt')!r})
        with torch.no_grad():
            out = model(pixel_values=io["x112"], dense_pixel_values=io["x512"]).task_logits
        for name, value in io["expected"].items():
            torch.testing.assert_close(out[name], value, atol=1e-6, rtol=1e-5, msg=name)
        print("REMOTE-OK")
    """)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


def test_sdpa_agrees_with_eager_attention():
    eager_config, sdpa_config = tiny_config(), tiny_config()
    eager_config._attn_implementation, sdpa_config._attn_implementation = "eager", "sdpa"
    reference, other = build(eager_config), build(sdpa_config)
    other.load_state_dict(reference.state_dict())
    assert reference.config._attn_implementation == "eager" and other.config._attn_implementation == "sdpa"
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        assert_outputs_close(reference(pixel_values=x112, dense_pixel_values=x512),
                             other(pixel_values=x112, dense_pixel_values=x512), atol=2e-5)


def test_flex_attention_is_not_claimed(tmp_path):
    """flex_attention crashed the process on CPU (torch 2.13); asking for it must be a clear error instead."""
    build(tiny_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="flex"):
        FaceptorModel.from_pretrained(tmp_path, attn_implementation="flex_attention")


def test_output_hidden_states_gives_every_encoder_layer():
    model = build(tiny_config())
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        out = model(pixel_values=x112, dense_pixel_values=x512, output_hidden_states=True)
        encoder_only = model(pixel_values=x112, tasks=[], output_hidden_states=True)
        plain = model(pixel_values=x112)
    layers, width = model.config.num_hidden_layers, model.config.hidden_size
    assert len(out.hidden_states) == layers + 1 and len(out.dense_hidden_states) == layers + 1
    assert out.hidden_states[-1].shape == (2, 1 + 7 * 7, width)
    assert out.dense_hidden_states[-1].shape == (2, 1 + 4 * 4, width)
    assert encoder_only.task_logits == {} and encoder_only.dense_hidden_states is None
    torch.testing.assert_close(encoder_only.hidden_states[-1], out.hidden_states[-1])
    assert plain.hidden_states is None
    # the recognition head pools the recognition layer's patch tokens: those are hidden_states[layer + 1][:, 1:]
    head = model.recognition_heads["recog_ms1mv3"]
    with torch.no_grad():
        pooled = head(out.hidden_states[model.config.recognition_layer + 1][:, 1:])
    torch.testing.assert_close(pooled, out.task_logits["recog_ms1mv3"])


def test_untrained_flag_follows_the_weights(tmp_path):
    model = build(tiny_config())
    x112 = tiny_inputs()[0]
    assert model.is_untrained and model(pixel_values=x112).untrained is True
    model.save_pretrained(tmp_path / "random")
    assert FaceptorModel.from_pretrained(tmp_path / "random").is_untrained  # a saved random model stays flagged
    trained = build(tiny_config())
    trained.load_state_dict(model.state_dict())
    assert not trained.is_untrained and trained(pixel_values=x112).untrained is None
    trained.save_pretrained(tmp_path / "trained")
    assert not FaceptorModel.from_pretrained(tmp_path / "trained").is_untrained


def test_bfloat16_forward_is_dtype_clean(variant_config):
    model = build(variant_config).to(torch.bfloat16)
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        out = model(pixel_values=x112, dense_pixel_values=x512)
        reference = build(variant_config)(pixel_values=x112, dense_pixel_values=x512)
    for name, value in out.task_logits.items():
        assert value.dtype == torch.bfloat16 and torch.isfinite(value.float()).all()
        scale = reference.task_logits[name].abs().max().item() + 1e-3
        assert (value.float() - reference.task_logits[name]).abs().max().item() < 0.1 * scale, name


def test_outputs_follow_weight_updates_in_place():
    model = build(tiny_config())
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        before = model(dense_pixel_values=x512).task_logits["parsing_tiny"]
        model.decoder.level_embeddings.add_(0.5)
        model.encoder.embeddings.position_embedding.mul_(1.5)
        after = model(dense_pixel_values=x512).task_logits["parsing_tiny"]
    model2 = build(tiny_config())
    model2.load_state_dict(model.state_dict())
    with torch.no_grad():
        fresh = model2(dense_pixel_values=x512).task_logits["parsing_tiny"]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh, atol=0, rtol=0)


def test_heatmap_centroids_official_decoding():
    logits = torch.full((1, 1, 8, 8), -30.0)
    logits[0, 0, 2, 5] = 30.0  # a single confident pixel at row 2, column 5
    point = heatmap_centroids(logits)[0, 0]
    torch.testing.assert_close(point, torch.tensor([(5 + 0.5) / 8, (2 + 0.5) / 8]))
    flat = heatmap_centroids(torch.zeros(1, 1, 8, 8))[0, 0]  # uniform map -> center of the crop
    torch.testing.assert_close(flat, torch.tensor([0.5, 0.5]))


def test_preset_parameter_counts():
    expected = {  # the paper's counts minus the 394,752 unused ln_post/proj parameters we do not keep
        "base": 103_200_001 - 394_752, "naive": 178_911_058 - 394_752,
        "full1": 103_335_681 - 394_752, "full2": 104_321_281 - 394_752,
    }
    configs = {"base": FaceptorConfig.faceptor_base(), "naive": FaceptorConfig.naive_faceptor(),
               "full1": FaceptorConfig.faceptor_full(), "full2": FaceptorConfig.faceptor_full(stage=2)}
    for name, config in configs.items():
        with torch.device("meta"):
            model = FaceptorModel(config)
        assert sum(p.numel() for p in model.parameters()) == expected[name], name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pixel_values=torch.randn(2, 112, 112)), "must have shape"),
        (dict(pixel_values=torch.randn(2, 1, 112, 112)), "must have shape"),
        (dict(pixel_values=torch.randn(2, 3, 100, 100)), "multiples of the patch size"),
        (dict(pixel_values=torch.randn(0, 3, 112, 112)), "multiples of the patch size"),
        (dict(pixel_values=torch.zeros(1, 3, 112, 112, dtype=torch.uint8)), "floating-point"),
        (dict(pixel_values=[[1.0]]), "torch.Tensor"),
        (dict(), "give pixel_values"),
        (dict(pixel_values=torch.randn(1, 3, 112, 112), tasks=["parsing_tiny"]), "dense_pixel_values"),
        (dict(pixel_values=torch.randn(1, 3, 112, 112), tasks=["nope"]), "unknown task"),
        (dict(pixel_values=torch.randn(1, 3, 112, 112), pixel_value=1), "unexpected arguments"),
    ],
)
def test_bad_inputs_name_the_problem(kwargs, message):
    model = build(tiny_config())
    with pytest.raises((ValueError, TypeError, KeyError), match=message):
        model(**kwargs)


def test_config_rejects_inconsistent_fields():
    with pytest.raises(ValueError, match="head_type"):
        tiny_config(head_type="other")
    with pytest.raises(ValueError, match="outside"):
        tiny_config(decoder_levels=[7])
    with pytest.raises(ValueError, match="unique"):
        tiny_config(tasks=["age_morph2", "age_morph2"])
    with pytest.raises(ValueError, match="unknown task type"):
        tiny_config(tasks=[{"name": "pose_biwi", "num_queries": 3}])


def test_new_task_is_a_config_change():
    tasks = [{"name": "pose_biwi", "type": "pose", "readout": "value", "input_size": 112,
              "labels": ["yaw", "pitch", "roll"]}, "affect_rafdb"]
    model = build(tiny_config(tasks=tasks))
    with torch.no_grad():
        out = model(pixel_values=tiny_inputs()[0])
    assert out.task_logits["pose_biwi"].shape == (2, 3)
    assert model.config.id2label_by_task["pose_biwi"] == {0: "yaw", 1: "pitch", 2: "roll"}


@pytest.mark.slow
def test_torch_compile_full_graph(variant_config):
    model = build(variant_config)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        assert_outputs_close(compiled(pixel_values=x112, dense_pixel_values=x512),
                             model(pixel_values=x112, dense_pixel_values=x512), atol=1e-5)


def test_model_accepts_processor_output_directly():
    """The processor's output holds only model inputs; its face geometry is apart and is no model argument."""
    from faceptor_hf import FaceptorImageProcessor

    model = build(tiny_config())
    processor = FaceptorImageProcessor()
    inputs = processor(torch.rand(3, 90, 120))
    assert set(inputs) == {"pixel_values", "dense_pixel_values"}
    with torch.no_grad():
        out = model(**inputs)
    assert out.task_logits["parsing_tiny"].shape == (1, 3, 128, 128)
    faces = processor.post_process_face_analysis(out, inputs, model.config)
    mask = faces[0][0]["tasks"]["parsing_tiny"]["mask"]
    assert len(faces) == 1 and len(faces[0]) == 1 and (len(mask), len(mask[0])) == (90, 120)
    with pytest.raises(TypeError, match=r"unexpected arguments \['affine_matrices'\]"):
        model(**inputs, affine_matrices=inputs.geometry.affine_matrices)


def test_pipeline_entry_is_only_in_the_save_that_asked_for_it(tmp_path):
    import json

    from faceptor_hf.hub import save_release

    model = build(tiny_config())
    save_release(tmp_path / "release", model)
    model.save_pretrained(tmp_path / "local")
    assert "custom_pipelines" in json.loads((tmp_path / "release" / "config.json").read_text())
    assert (tmp_path / "release" / "pipeline_face_analysis.py").exists()
    assert "custom_pipelines" not in json.loads((tmp_path / "local" / "config.json").read_text())


def test_drop_path_modes_drop_samples_or_token_positions():
    from faceptor_hf.modeling_faceptor import FaceptorDropPath

    branch = torch.ones(64, 50, 4)
    for mode in ("sample", "token"):
        layer = FaceptorDropPath(0.5, mode).train()
        torch.manual_seed(0)
        out = layer(branch)
        kept = out[..., 0] != 0
        assert set(out.unique().tolist()) <= {0.0, 2.0}  # kept entries scaled by 1 / (1 - rate)
        if mode == "sample":  # a whole sample in or out
            assert (kept == kept[:, :1]).all() and 0 < kept[:, 0].sum() < 64
        else:  # a token position in or out for the whole batch, as the official sequence-first blocks drop
            assert (kept == kept[:1, :]).all() and 0 < kept[0].sum() < 50
        assert torch.equal(layer.eval()(branch), branch)
    config = tiny_config(drop_path_mode="token")
    assert {layer.drop_path.mode for layer in build(config).encoder.layers} == {"token"}
    assert FaceptorConfig(**config.to_dict()).drop_path_mode == "token"
    with pytest.raises(ValueError, match="drop_path_mode must be one of"):
        tiny_config(drop_path_mode="batch")


def test_presets_and_converted_tasks_carry_the_official_loss_weights():
    from faceptor_hf.configuration_faceptor import official_loss_weights

    base = FaceptorConfig.faceptor_base()
    assert {t.name: t.loss_weight for t in base.tasks} == official_loss_weights(base.task_names, recipe="base")
    assert base.get_task("align_300w").loss_weight == 1000.0
    assert sum(t.loss_weight for t in FaceptorConfig.faceptor_full().tasks) == pytest.approx(1222)
    assert {t.loss_weight for t in FaceptorConfig.naive_faceptor().tasks} == {1.0, 0.8, 0.2}
    reloaded = FaceptorConfig(**base.to_dict())  # config.json keeps them; older files without it weigh 1
    assert reloaded.get_task("parsing_celebam").loss_weight == 100.0
    assert tiny_config().get_task("age_tiny").loss_weight == 1.0
    with pytest.raises(ValueError, match="loss_weight must be positive"):
        tiny_config(tasks=[{"name": "age_x", "type": "age", "num_queries": 3, "loss_weight": 0}])
