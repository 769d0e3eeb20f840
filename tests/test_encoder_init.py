"""Starting from FaRL or CLIP: a random encoder checkpoint written in each accepted layout (FaRL / OpenAI CLIP
``visual.*`` with and without a ``state_dict`` wrapper, ``.pth`` and ``.safetensors``; transformers
``CLIPVisionModel`` and ``CLIPModel`` folders) loads into the encoder, and the encoder's tokens equal

* a FaRL-style forward written here as the official ``FaRLVisualFeatures(..., forced_input_resolution=512)`` runs
  (sequence-first ``nn.MultiheadAttention`` blocks, fp32 LayerNorm, QuickGELU, the 14x14 table resized once to
  32x32 and again to the input's grid) at 112 and 512 px, and
* transformers' ``CLIPVisionModel(..., interpolate_pos_encoding=True).last_hidden_state`` at 512 px.

Foreign or mismatching checkpoints are one-line errors naming the key and both shapes; ``faceptor-hf convert
--encoder-checkpoint`` writes a complete, untrained model folder, and a training config's ``encoder_init`` starts
its model from the checkpoint."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModel, CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from faceptor_hf import FaceptorConfig, FaceptorModel
from faceptor_hf.commands import main as cli
from faceptor_hf.convert_farl_encoder_to_hf import (
    EncoderCheckpointError,
    build_from_encoder,
    load_encoder_checkpoint,
    resize_position_table,
)

from conftest import TINY_DECODER, TINY_ENCODER

WIDTH, LAYERS, HEADS, MLP, PATCH, GRID = 24, 4, 2, 48, 16, 14
TASKS = [{"name": "recog_ms1mv3", "embedding_size": 8}, "affect_rafdb",
         {"name": "align_tiny", "type": "align", "num_queries": 4}]


def tiny_model_config(**overrides) -> FaceptorConfig:
    fields = dict(TINY_ENCODER, **TINY_DECODER, tasks=TASKS, position_grid_size=32)
    fields.update(overrides)
    return FaceptorConfig(**fields)


def farl_state(seed=0, width=WIDTH, patch=PATCH, layers=LAYERS) -> dict:
    """A random CLIP/FaRL-format state dict: visual tower (with ln_post, proj) plus a small text tower."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=generator) * scale

    state = {"visual.conv1.weight": rand(width, 3, patch, patch, scale=0.05),
             "visual.class_embedding": rand(width), "visual.positional_embedding": rand(1 + GRID * GRID, width),
             "visual.ln_pre.weight": 1 + rand(width), "visual.ln_pre.bias": rand(width),
             "visual.ln_post.weight": 1 + rand(width), "visual.ln_post.bias": rand(width),
             "visual.proj": rand(width, 16)}
    for i in range(layers):
        block = f"visual.transformer.resblocks.{i}."
        state.update({
            block + "attn.in_proj_weight": rand(3 * width, width), block + "attn.in_proj_bias": rand(3 * width),
            block + "attn.out_proj.weight": rand(width, width), block + "attn.out_proj.bias": rand(width),
            block + "ln_1.weight": 1 + rand(width), block + "ln_1.bias": rand(width),
            block + "ln_2.weight": 1 + rand(width), block + "ln_2.bias": rand(width),
            block + "mlp.c_fc.weight": rand(MLP, width), block + "mlp.c_fc.bias": rand(MLP),
            block + "mlp.c_proj.weight": rand(width, MLP), block + "mlp.c_proj.bias": rand(width)})
    state.update({"token_embedding.weight": rand(50, 16), "positional_embedding": rand(77, 16),
                  "transformer.resblocks.0.attn.in_proj_weight": rand(48, 16), "ln_final.weight": rand(16),
                  "text_projection": rand(16, 16), "logit_scale": torch.tensor(4.6)})
    return state


class FarlStyleEncoder(nn.Module):
    """The official FaRL feature extractor's computation, written independently: sequence-first blocks with
    ``nn.MultiheadAttention``, LayerNorm statistics in fp32, the position table resized to 32x32 once at
    construction and to the input grid at every forward (bicubic, align_corners=False)."""

    def __init__(self, state: dict, forced_grid: int = 32):
        super().__init__()
        self.state = {key[len("visual."):]: value for key, value in state.items() if key.startswith("visual.")}
        table = self.state["positional_embedding"]
        self.table = self._resize(table, forced_grid)
        self.blocks = nn.ModuleList()
        for i in range(LAYERS):
            attention = nn.MultiheadAttention(WIDTH, HEADS)
            prefix = f"transformer.resblocks.{i}.attn."
            attention.in_proj_weight.data = self.state[prefix + "in_proj_weight"]
            attention.in_proj_bias.data = self.state[prefix + "in_proj_bias"]
            attention.out_proj.weight.data = self.state[prefix + "out_proj.weight"]
            attention.out_proj.bias.data = self.state[prefix + "out_proj.bias"]
            self.blocks.append(attention)

    @staticmethod
    def _resize(table, grid):
        side = math.isqrt(table.shape[0] - 1)
        patches = table[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, (grid, grid), mode="bicubic", align_corners=False)
        return torch.cat([table[:1], patches.reshape(table.shape[1], -1).t()])

    def _norm(self, x, name):
        mean = x.float().mean(-1, keepdim=True)
        var = (x.float() - mean).pow(2).mean(-1, keepdim=True)
        return self.state[name + ".weight"] * ((x.float() - mean) / torch.sqrt(var + 1e-5)) + self.state[name + ".bias"]

    def forward(self, images):
        """(B, 3, H, W) -> last block's patch tokens (B, S*S, D)."""
        x = F.conv2d(images, self.state["conv1.weight"], stride=PATCH)
        batch, _, side, _ = x.shape
        x = x.reshape(batch, WIDTH, -1).permute(0, 2, 1)
        x = torch.cat([self.state["class_embedding"] + torch.zeros(batch, 1, WIDTH), x], dim=1)
        x = self._norm(x + self._resize(self.table, side), "ln_pre").permute(1, 0, 2)
        for i, attention in enumerate(self.blocks):
            block = f"transformer.resblocks.{i}."
            x = x + attention(*(self._norm(x, block + "ln_1"),) * 3, need_weights=False)[0]
            hidden = F.linear(self._norm(x, block + "ln_2"), self.state[block + "mlp.c_fc.weight"],
                              self.state[block + "mlp.c_fc.bias"])
            hidden = hidden * torch.sigmoid(1.702 * hidden)
            x = x + F.linear(hidden, self.state[block + "mlp.c_proj.weight"], self.state[block + "mlp.c_proj.bias"])
        return x[1:].permute(1, 0, 2)


def last_tokens(model: FaceptorModel, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        output = model(pixel_values=images, tasks=[], output_hidden_states=True)
    return output.hidden_states[-1]


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


@pytest.fixture(scope="module")
def farl_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("farl") / "FaRL-tiny.pth"
    torch.save({"state_dict": farl_state()}, path)
    return path


@pytest.mark.parametrize("layout", ["wrapped_pth", "plain_pth", "safetensors"])
def test_farl_layout_equals_the_official_forward_at_112_and_512(layout, tmp_path):
    state = farl_state()
    path = tmp_path / ("farl.safetensors" if layout == "safetensors" else "farl.pth")
    if layout == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state} if layout == "wrapped_pth" else state, path)
    model = FaceptorModel(tiny_model_config()).eval()
    info = load_encoder_checkpoint(model, str(path))
    assert info.layout == "farl" and (info.source_grid, info.target_grid) == (14, 32)
    assert info.dropped == 9  # ln_post (2), proj, and the 6 text-tower tensors
    reference = FarlStyleEncoder(state).eval()
    generator = torch.Generator().manual_seed(1)
    for size in (112, 512):
        images = torch.randn(2, 3, size, size, generator=generator)
        with torch.no_grad():
            expected = reference(images)
        assert relative_error(last_tokens(model, images)[:, 1:], expected) <= 1e-5, size
    assert model.is_untrained  # decoder and heads are still random
    assert model.config.encoder_init["layout"] == "farl"


def test_the_position_table_is_resized_once_as_the_official_model_does():
    table = torch.randn(1 + 14 * 14, 8)
    resized = resize_position_table(table, 32)
    assert resized.shape == (1 + 32 * 32, 8) and torch.equal(resized[0], table[0])
    expected = F.interpolate(table[1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2), (32, 32), mode="bicubic",
                             align_corners=False)
    torch.testing.assert_close(resized[1:], expected.flatten(2)[0].t(), rtol=0, atol=0)
    assert torch.equal(resize_position_table(resized, 32), resized)


def _clip_vision_config():
    return CLIPVisionConfig(hidden_size=WIDTH, intermediate_size=MLP, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, image_size=224, patch_size=PATCH, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5)


@pytest.mark.parametrize("whole_clip", [False, True])
def test_transformers_clip_layout_equals_clip_vision_model_at_512(whole_clip, tmp_path):
    torch.manual_seed(3)
    if whole_clip:
        clip = CLIPModel(CLIPConfig(vision_config=_clip_vision_config().to_dict(),
                                    text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                                 "num_attention_heads": 2}, projection_dim=16))
        vision = clip.vision_model
    else:
        clip = CLIPVisionModel(_clip_vision_config())
        vision = getattr(clip, "vision_model", clip)  # transformers 5 flattened CLIPVisionModel
    with torch.no_grad():  # random position rows and norms, so a wrong mapping cannot hide behind defaults
        for parameter in vision.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    clip.save_pretrained(tmp_path / "clip")
    model = FaceptorModel(tiny_model_config()).eval()
    info = load_encoder_checkpoint(model, str(tmp_path / "clip"))
    assert info.layout == "transformers-clip" and info.source_grid == 14
    images = torch.randn(2, 3, 512, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = vision(pixel_values=images, interpolate_pos_encoding=True).last_hidden_state
    assert relative_error(last_tokens(model, images), expected) <= 1e-5


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"visual.class_embedding": torch.zeros(32)}), r"class_embedding has shape \(32,\), this "
                                                                       r"model's width needs \(24,\)"),
    (lambda s: s.update({"visual.conv1.weight": torch.zeros(24, 3, 32, 32)}),
     r"conv1.weight \(patch embedding\) has shape \(24, 3, 32, 32\), this model's patch size needs \(24, 3, 16, 16\)"),
    (lambda s: s.update({"visual.transformer.resblocks.0.mlp.c_fc.weight": torch.zeros(64, 24)}),
     r"encoder.layers.0.mlp.fc1.weight has shape \(64, 24\), this model's encoder needs \(48, 24\)"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("visual.transformer.resblocks.3.")], "has 3 blocks"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("visual.")], "foreign checkpoint"),
    (lambda s: s.pop("visual.ln_pre.bias"), r"lacks \['encoder.pre_layernorm.bias'\]"),
])
def test_mismatching_checkpoints_name_the_key_and_shapes(change, message, tmp_path):
    state = farl_state()
    change(state)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(EncoderCheckpointError, match=message):
        load_encoder_checkpoint(FaceptorModel(tiny_model_config()), str(tmp_path / "bad.pth"))


def test_unreadable_sources_and_other_activations_are_refused(tmp_path, farl_file):
    (tmp_path / "empty.pth").write_bytes(b"")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(farl_file.read_bytes()[:500])
    model = FaceptorModel(tiny_model_config())
    for source, message in ((tmp_path / "empty.pth", "empty"), (truncated, "cannot be read"),
                            (tmp_path / "missing.pth", "no such file")):
        with pytest.raises(EncoderCheckpointError, match=message):
            load_encoder_checkpoint(model, str(source))
    config = _clip_vision_config()
    config.hidden_act = "gelu"
    CLIPVisionModel(config).save_pretrained(tmp_path / "gelu")
    with pytest.raises(EncoderCheckpointError, match="hidden_act='gelu'"):
        load_encoder_checkpoint(model, str(tmp_path / "gelu"))
    with pytest.raises(EncoderCheckpointError, match="width needs"):  # the presets are ViT-B/16
        build_from_encoder(str(farl_file), "base")


def test_convert_command_writes_a_complete_untrained_model(farl_file, tmp_path, capsys):
    overrides = {key: value for key, value in tiny_model_config().to_dict().items()
                 if key in {**TINY_ENCODER, **TINY_DECODER} or key == "position_grid_size"}
    code = cli(["convert", "--encoder-checkpoint", str(farl_file), "--preset", "base",
                "--config-overrides", json.dumps(overrides), "--output", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr()
    assert "position grid 14x14 resized to 32x32" in capsys.readouterr().out
    model = AutoModel.from_pretrained(tmp_path / "out")
    assert model.is_untrained and model.config.task_names[0] == "recog_ms1mv3"
    assert model.config.get_task("align_300w").loss_weight == 1000.0  # the Base recipe travels with the tasks
    reference = FaceptorModel(tiny_model_config())
    load_encoder_checkpoint(reference, str(farl_file))
    for name, tensor in reference.state_dict().items():
        if name.startswith("encoder."):
            torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert (tmp_path / "out" / "preprocessor_config.json").exists()
    capsys.readouterr()
    code = cli(["convert", "--encoder-checkpoint", str(farl_file), "--preset", "base", "--output",
                str(tmp_path / "wide")])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("error: ") and error.count("\n") == 1 and "class_embedding" in error
