"""What a transformers user relies on beyond the forward pass: weight initialization of fresh models, missing keys and
new tasks; ``output_loading_info``; ``output_attentions``; input embeddings for adapters.

transformers' own common model tests (tests/test_modeling_common.py of its release) cover the same ground for
single-task models; where one of their expectations does not fit a multi-task vision model, the test here that
covers the same ground says why.
"""

import logging
import math
import re

import pytest
import torch
from torch import nn

from faceptor_hf import FaceptorModel
from faceptor_hf.modeling_faceptor import FaceptorChannelLayerNorm

from conftest import TINY_TASKS, tiny_config, tiny_inputs

torch.set_num_threads(2)


def build(config, seed=0):
    torch.manual_seed(seed)
    return FaceptorModel(config).eval()


# ---- initialization -----------------------------------------------------------------------------------------------
# (parameter-name pattern, expected distribution) in the order of FaceptorPreTrainedModel._init_weights' docstring;
# ("normal", std), ("uniform", low, high), ("zeros",). A std given as None is fan_in ** -0.5 of the tensor.
DOCUMENTED_INIT = [
    (r"encoder\.embeddings\.(class|position)_embedding", ("normal", "width")),
    (r"decoder\.layers\.\d+\.(cross|self)_attn\.[qkvout]+_proj\.weight", ("normal", None)),
    (r"decoder\.layers\.\d+\.(cross|self)_attn\.[qkvout]+_proj\.bias", ("zeros",)),
    (r"decoder\.layers\.\d+\.fc[12]\.weight", ("normal", None)),
    (r"decoder\.query_content\.\w+", ("normal", 1.0)),
    (r"decoder\.(level|layer_attention)_embeddings", ("normal", 1.0)),
    (r"decoder\.query_position\.\w+", ("uniform", 0.0, 1.0)),
    (r"decoder\.(level|layer_attention)_projections\.\d+\.weight", ("uniform", "c2_xavier")),
    (r"decoder\.(level|layer_attention)_projections\.\d+\.bias", ("zeros",)),
    (r"encoder\.embeddings\.patch_embedding\.weight", ("normal", "initializer_range")),
    (r"encoder\.layers\.\d+\.(self_attn\.(qkv|out)_proj|mlp\.fc[12])\.weight", ("normal", "initializer_range")),
    (r"encoder\.layers\.\d+\.(self_attn\.(qkv|out)_proj|mlp\.fc[12])\.bias", ("zeros",)),
]


def fan_in(weight):
    return weight.shape[1] * (weight[0][0].numel() if weight.ndim > 2 else 1)


def assert_documented_init(model: FaceptorModel):
    """Every parameter and buffer finite and drawn as FaceptorPreTrainedModel._init_weights documents: normal draws
    are pooled per rule (standardized), so their std is checked on thousands of values even in a tiny model."""
    config = model.config
    state = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, tensor in state.items():
        assert torch.isfinite(tensor.float()).all(), name
    pooled, checked = {}, set()
    for name, tensor in model.named_parameters():
        rule = next((r for pattern, r in DOCUMENTED_INIT if re.fullmatch(pattern, name)), None)
        if rule is None:
            continue
        checked.add(name)
        values = tensor.detach().double().flatten()
        if rule[0] == "zeros":
            assert values.abs().max() == 0, name
        elif rule[0] == "uniform":
            bound = math.sqrt(3 / fan_in(tensor))  # kaiming_uniform(a=1)
            low, high = (-bound, bound) if rule[1] == "c2_xavier" else rule[1:]
            assert values.min() >= low and values.max() <= high, name
            assert values.max() - values.min() > 0.5 * (high - low), name  # spread, not a constant
        else:
            std = {"width": config.hidden_size ** -0.5, "initializer_range": config.initializer_range}.get(
                rule[1], rule[1]) or fan_in(tensor) ** -0.5
            pooled.setdefault(rule, []).append(values / std)
    for rule, parts in pooled.items():
        standardized = torch.cat(parts)
        assert standardized.numel() >= 256, rule
        assert abs(standardized.mean()) < 0.15 and 0.85 < standardized.std() < 1.15, (rule, standardized.std())
    # everything else by layer type: norms 1/0 (BatchNorm statistics 0/1/0), other layers PyTorch's default
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        own = {f"{prefix}{n}": p for n, p in module.named_parameters(recurse=False)}
        if isinstance(module, nn.LayerNorm | FaceptorChannelLayerNorm | nn.modules.batchnorm._BatchNorm):
            assert (module.weight == 1).all() and (module.bias == 0).all(), module_name
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                assert (module.running_mean == 0).all() and (module.running_var == 1).all(), module_name
                assert module.num_batches_tracked.item() == 0, module_name
            checked.update(own)
        elif isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            bound = fan_in(module.weight) ** -0.5  # kaiming_uniform(a=sqrt(5)) and the bias share this bound
            for name, parameter in own.items():
                if name in checked:
                    continue
                largest = parameter.detach().abs().max()
                assert largest <= bound + 1e-7 and (largest > 0.3 * bound or parameter.numel() < 8), name
                checked.add(name)
    assert checked == set(dict(model.named_parameters())), set(dict(model.named_parameters())) - checked


VARIANTS = {"faceptor": {}, "layer_attention": {"layer_attention": True}, "naive": {"head_type": "naive"}}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fresh_model_is_initialized_as_documented(variant):
    assert_documented_init(build(tiny_config(**VARIANTS[variant])))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_missing_keys_are_initialized_as_documented(variant):
    """transformers 5 builds the model on the meta device and initializes only modules whose own weights are missing;
    a rule on a container block would never run (uninitialised memory: NaN, +-1e38)."""
    torch.manual_seed(0)
    model = FaceptorModel.from_pretrained(None, config=tiny_config(**VARIANTS[variant]), state_dict={})
    assert_documented_init(model)


def test_partly_missing_weights_keep_the_loaded_ones():
    model = build(tiny_config(layer_attention=True))
    state = {k: v for k, v in model.state_dict().items() if ".layers.1." not in k}
    loaded, info = FaceptorModel.from_pretrained(None, config=tiny_config(layer_attention=True), state_dict=state,
                                                 output_loading_info=True)
    assert set(info["missing_keys"]) == set(model.state_dict()) - set(state)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, state[name]) if name in state else torch.isfinite(value.float()).all(), name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_new_task_from_pretrained_is_initialized_and_trains(tmp_path, variant):
    """The usual fine-tuning start: a saved model plus a task it never had. The new task's weights are the only
    missing keys, get the documented init, and one optimizer step on them gives finite outputs."""
    build(tiny_config(**VARIANTS[variant])).save_pretrained(tmp_path)
    saved = FaceptorModel.from_pretrained(tmp_path).state_dict()
    config = tiny_config(**VARIANTS[variant], tasks=TINY_TASKS + ["affect_rafdb"])
    torch.manual_seed(0)
    model, info = FaceptorModel.from_pretrained(tmp_path, config=config, output_loading_info=True)
    assert info["missing_keys"] and all("affect_rafdb" in key for key in info["missing_keys"])
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, value in model.state_dict().items():
        if name in saved:
            assert torch.equal(value, saved[name]), name
    assert_documented_init_of_new_task(model, "affect_rafdb")

    x112 = tiny_inputs(batch=3)[0]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    logits = model(pixel_values=x112, tasks=["affect_rafdb"]).task_logits["affect_rafdb"]
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 3, 6]))
    loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(pixel_values=x112).task_logits
    assert after["affect_rafdb"].shape == (3, 7)
    for name, value in after.items():
        assert torch.isfinite(value).all(), name


def assert_documented_init_of_new_task(model, task):
    if model.config.head_type == "faceptor":
        content, position = model.decoder.query_content[task], model.decoder.query_position[task]
        assert content.shape == position.shape == (7, model.config.decoder_hidden_size)
        assert 0.5 < content.std() < 1.5 and content.abs().max() < 6
        assert position.min() >= 0 and position.max() <= 1 and position.std() > 0.15
    else:
        classifier = model.naive_value_heads["affect"].classifiers[task]
        bound = classifier.in_features ** -0.5
        for parameter in (classifier.weight, classifier.bias):
            assert torch.isfinite(parameter).all() and 0.3 * bound < parameter.abs().max() <= bound


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


# ---- input embeddings and adapters --------------------------------------------------------------------------------
class LowRankAdapter(nn.Module):
    """A PEFT-style adapter around a frozen Linear: base(x) + up(down(x)), up starting at zero."""

    def __init__(self, base: nn.Linear, rank: int = 2):
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x):
        return self.base(x) + self.up(self.down(x))


def test_input_embeddings_are_the_patch_embedding():
    """transformers' common test expects an ``nn.Embedding`` (a token table); a vision model's input embedding is its
    patch projection, as for ViT."""
    model = build(tiny_config())
    assert model.get_input_embeddings() is model.encoder.embeddings.patch_embedding
    replacement = nn.Conv2d(3, model.config.hidden_size, 16, stride=16, bias=False)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement


@pytest.mark.parametrize("enable_input_grads", [True, False])
def test_adapter_on_frozen_model_gets_gradients_with_reentrant_checkpointing(enable_input_grads):
    """Reentrant checkpointing passes gradients only to a segment whose inputs require grad; in a frozen model that
    takes ``enable_input_require_grads``, which hooks ``get_input_embeddings()`` (PEFT and the Trainer call it)."""
    model = build(tiny_config(drop_path_rate=0.0)).train()
    model.requires_grad_(False)
    layer = model.encoder.layers[1]
    layer.mlp.fc1 = LowRankAdapter(layer.mlp.fc1)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.25 name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    if enable_input_grads:
        model.enable_input_require_grads()
    adapter = layer.mlp.fc1
    assert [p for p in model.parameters() if p.requires_grad] == [adapter.down.weight, adapter.up.weight]
    logits = model(pixel_values=tiny_inputs()[0], tasks=["age_tiny"]).task_logits["age_tiny"]
    if not enable_input_grads:  # the control: nothing reaches the adapter
        assert not logits.requires_grad
        return
    logits.pow(2).mean().backward()
    # up starts at zero (the LoRA convention), so only it gets a non-zero gradient on the first step
    down, up = adapter.down.weight.grad, adapter.up.weight.grad
    assert down is not None and up is not None and up.abs().sum() > 0


# ---- attentions ---------------------------------------------------------------------------------------------------
def with_attention(config, implementation):
    config._attn_implementation = implementation
    return config


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_output_attentions_per_input(variant):
    """One ``attentions`` field per input, mirroring ``hidden_states`` / ``dense_hidden_states``, plus the decoder's
    cross-attentions; asking for them changes no task output."""
    config = with_attention(tiny_config(**VARIANTS[variant]), "eager")
    model = build(config)
    x112, x512 = tiny_inputs(dense_size=64)
    with torch.no_grad():
        plain = model(pixel_values=x112, dense_pixel_values=x512)
        out = model(pixel_values=x112, dense_pixel_values=x512, output_attentions=True)
    heads, layers = config.num_attention_heads, config.num_hidden_layers
    assert plain.attentions is plain.dense_attentions is plain.cross_attentions is None
    for name in plain.task_logits:
        assert torch.equal(out.task_logits[name], plain.task_logits[name]), name
    for field, tokens in (("attentions", 1 + 7 * 7), ("dense_attentions", 1 + 4 * 4)):
        weights = getattr(out, field)
        assert len(weights) == layers
        for layer in weights:
            assert layer.shape == (2, heads, tokens, tokens)
            torch.testing.assert_close(layer.sum(-1), torch.ones(2, heads, tokens))
    if variant == "naive":
        assert out.cross_attentions is None and out.dense_cross_attentions is None
        return
    levels = len(config.decoder_levels) + len(config.layer_attention_levels)
    decoder_heads = config.decoder_num_attention_heads
    for field, queries, grid in (("cross_attentions", 6 + 40 + 7, 7 * 7), ("dense_cross_attentions", 3 + 4, 4 * 4)):
        weights = getattr(out, field)
        assert len(weights) == config.decoder_num_layers
        for layer in weights:
            assert layer.shape == (2, decoder_heads, queries, levels * grid)
            torch.testing.assert_close(layer.sum(-1), torch.ones(2, decoder_heads, queries))


def test_output_attentions_from_config_and_encoder_only():
    config = with_attention(tiny_config(), "eager")
    config.output_attentions = True
    model = build(config)
    x112 = tiny_inputs()[0]
    with torch.no_grad():
        from_config = model(pixel_values=x112)
        encoder_only = model(pixel_values=x112, tasks=[], output_attentions=True)
        declined = model(pixel_values=x112, output_attentions=False)
    assert len(from_config.attentions) == config.num_hidden_layers and from_config.dense_attentions is None
    assert encoder_only.task_logits == {} and encoder_only.cross_attentions is None
    torch.testing.assert_close(encoder_only.attentions[-1], from_config.attentions[-1])
    assert declined.attentions is None


def test_output_attentions_under_sdpa_falls_back_to_eager(caplog):
    """SDPA never forms the weights: such a call runs eager attention, says so once, and gives what eager gives."""
    reference = build(with_attention(tiny_config(layer_attention=True), "eager"))
    model = build(with_attention(tiny_config(layer_attention=True), "sdpa"))
    model.load_state_dict(reference.state_dict())
    x112, x512 = tiny_inputs(dense_size=64)
    logging.Logger.warning_once.cache_clear()  # transformers' once-only warnings are cached per process
    with torch.no_grad(), caplog.at_level(logging.WARNING):
        expected = reference(pixel_values=x112, dense_pixel_values=x512, output_attentions=True)
        out = model(pixel_values=x112, dense_pixel_values=x512, output_attentions=True)
        plain = model(pixel_values=x112, dense_pixel_values=x512)
    assert model.config._attn_implementation == "sdpa"
    assert [r.message for r in caplog.records if "falling back to eager" in r.message] != []
    for field in ("attentions", "dense_attentions", "cross_attentions", "dense_cross_attentions"):
        for got, want in zip(getattr(out, field), getattr(expected, field), strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5, msg=field)
    for name, value in expected.task_logits.items():
        torch.testing.assert_close(out.task_logits[name], value, atol=2e-5, rtol=1e-4, msg=name)
        torch.testing.assert_close(plain.task_logits[name], value, atol=2e-5, rtol=1e-4, msg=name)
    assert plain.attentions is None


def test_attentions_and_hidden_states_carry_gradients():
    """transformers' common test backpropagates from ``outputs[0].flatten()[0]``; here ``outputs[0]`` is the dict of
    task outputs (see FaceptorOutput), so this test backpropagates from a task logit instead."""
    model = build(with_attention(tiny_config(drop_path_rate=0.0), "eager")).train()
    out = model(pixel_values=tiny_inputs()[0], output_attentions=True, output_hidden_states=True)
    first_state, first_attention = out.hidden_states[0], out.attentions[0]
    first_state.retain_grad()
    first_attention.retain_grad()
    cross = out.cross_attentions[0]
    cross.retain_grad()
    out.task_logits["age_tiny"].flatten()[0].backward()
    assert first_state.grad is not None and first_attention.grad is not None and cross.grad is not None
