"""Faceptor: a FaRL ViT-B/16 encoder read out by task queries of a shared transformer decoder (or, for Naive
Faceptor, by one standardized head per task type).

Shapes use B = faces, D = encoder width, H = decoder width, S = token-grid side (7 at 112 px, 32 at 512 px),
Q = queries of a task, M = memory tokens (S*S per level read by the decoder).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

from .configuration_faceptor import FaceptorConfig
from .task_decoding import heatmap_centroids, normalized_embedding
from .task_types import FaceptorTask, get_task_type

logger = logging.get_logger(__name__)


@dataclass
class FaceptorOutput(ModelOutput):
    """Output of [`FaceptorModel`].

    Args:
        loss: reserved for training wrappers; ``None`` at inference. (A non-dict first field keeps ``ModelOutput``
            from unpacking ``task_logits`` into top-level keys.)
        last_hidden_state: (B, 1 + S*S, D) encoder tokens of ``pixel_values`` after the last block, class token
            first (no final norm: the heads read the blocks' outputs as they are). Set whenever the encoder ran
            through its last block for that input, which it does for every preset (the recognition and decoder
            levels include the last block) and for ``tasks=[]``; it is a reference to a tensor computed anyway,
            never extra work. None without ``pixel_values``, or when every selected 112-px task reads shallower
            blocks. Being the first field that is set, it is ``output[0]``: what transformers'
            ``image-feature-extraction`` pipeline returns without ``pool``.
        pooler_output: (B, embedding_size) the face-recognition embedding L2-normalized (the first recognition
            task among the selected ones, in config order; one pass, no mirror sum), or None when no recognition
            task ran. What the ``image-feature-extraction`` pipeline returns with ``pool=True``.
        task_logits: task name -> raw head output, exactly as the official heads produce it:
            embedding tasks (B, embedding_size) before L2 normalization; value tasks (B, Q) logits;
            parsing (B, C, 4S, 4S) mask logits before upsampling to the crop size; landmarks (B, N, 4S, 4S)
            heatmap logits before the sigmoid.
        landmarks: landmark task name -> (B, N, 2) XY points in [0, 1] of the dense crop, decoded from the heatmaps
            with the official sigmoid-weighted centroid (``task_decoding.heatmap_centroids``; crop pixel =
            value * crop_size - 0.5).
        hidden_states: with ``output_hidden_states``, the encoder states of ``pixel_values``: the embeddings after
            the pre-norm, then the output of every block, each (B, 1 + S*S, D) with the class token first.
        dense_hidden_states: the same for ``dense_pixel_values``.
        attentions: with ``output_attentions``, the encoder's attention weights over ``pixel_values``, one
            (B, heads, 1 + S*S, 1 + S*S) per block (softmax over the last axis, class token first).
        dense_attentions: the same for ``dense_pixel_values``.
        cross_attentions: with ``output_attentions``, the decoder's cross-attention weights of the pass over
            ``pixel_values``, one (B, decoder heads, Q, M) per decoder layer: rows are the queries of that input's
            decoder tasks in ``task_logits`` order (recognition has none), columns the memory tokens, level by level
            in ``decoder_levels + layer_attention_levels`` order. None without decoder tasks (and for Naive Faceptor).
        dense_cross_attentions: the same for ``dense_pixel_values``.
        untrained: True when the weights are random (never trained or loaded), so every consumer of the output
            (processor, pipeline, CLI) can flag its results; None otherwise.
    """

    loss: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    task_logits: dict[str, torch.Tensor] | None = None
    landmarks: dict[str, torch.Tensor] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    dense_hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    dense_attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    dense_cross_attentions: tuple[torch.Tensor, ...] | None = None
    untrained: bool | None = None


def init_scheme(scheme: str, *modules: nn.Module) -> None:
    """Tag the modules that own parameters with the initialization ``FaceptorPreTrainedModel._init_weights`` gives
    them. transformers initializes module by module (the ones whose own parameters are missing), so the role of a
    layer must be readable on the layer itself, not only on the block that contains it."""
    for module in modules:
        module.init_scheme = scheme


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """query (B, h, Lq, d), key/value (B, h, Lk, d), additive mask broadcastable to (B, h, Lq, Lk) -> (B, Lq, h, d)."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class FaceptorAttention(nn.Module):
    """Multi-head attention with separate q/k/v inputs (the decoder needs ``k = memory + pos`` but ``v = memory``).

    ``fused_qkv=True`` packs the three projections into one matmul for self-attention over one input (encoder).
    """

    def __init__(self, config: FaceptorConfig, embed_dim: int, num_heads: int, fused_qkv: bool = False):
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim)
        else:
            self.q_proj = nn.Linear(embed_dim, embed_dim)
            self.k_proj = nn.Linear(embed_dim, embed_dim)
            self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, query_states, key_states=None, value_states=None, attention_mask=None,
                output_attentions: bool = False):
        """query_states (B, Lq, E); key_states/value_states (B or 1, Lk, E) -> ((B, Lq, E), attention weights
        (B, h, Lq, Lk) with ``output_attentions``, else None)."""
        if self.fused_qkv:
            q, k, v = self.qkv_proj(query_states).chunk(3, dim=-1)
        else:
            q = self.q_proj(query_states)
            k = self.k_proj(key_states)
            v = self.v_proj(value_states)
        implementation = self.config._attn_implementation
        if output_attentions and implementation != "eager":
            # only the eager path materializes the weights; the other kernels never form them
            logger.warning_once(f"`output_attentions=True` is not supported by the {implementation!r} attention; "
                                "falling back to eager attention for these calls. Load the model with "
                                "attn_implementation=\"eager\" to silence this warning.")
            implementation = "eager"
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        out, weights = attention(self, self._heads(q), self._heads(k), self._heads(v), attention_mask,
                                 scaling=self.scaling, dropout=0.0)
        return self.out_proj(out.flatten(2)), weights if output_attentions else None


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class FaceptorDropPath(nn.Module):
    """Stochastic depth (training only) on a residual branch (B, L, D), kept entries scaled by 1 / (1 - rate).

    ``mode="sample"`` drops whole samples (mask (B, 1, 1)); ``mode="token"`` drops token positions shared by the
    batch (mask (1, L, 1)), as the official encoder does (see ``FaceptorConfig.drop_path_mode``)."""

    def __init__(self, rate: float, mode: str = "sample"):
        super().__init__()
        self.rate = rate
        self.mode = mode

    def forward(self, x):
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        if self.mode == "token":
            shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        else:
            shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep


# ---------------------------------------------------------------------------------------------------------------
# Encoder (FaRL / CLIP ViT layout)
# ---------------------------------------------------------------------------------------------------------------
class FaceptorEncoderEmbeddings(nn.Module):
    """Patchify, prepend the class token, add the position table resized to the actual token grid."""

    def __init__(self, config: FaceptorConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size,
                                         stride=config.patch_size, bias=False)
        init_scheme("truncated_normal", self.patch_embedding)
        self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.position_embedding = nn.Parameter(torch.zeros(1 + config.position_grid_size**2, config.hidden_size))

    def resized_position_embedding(self, grid: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """(1 + Sh*Sw, D): class row kept, patch rows resized bicubically (align_corners=False, no antialias) in fp32,
        exactly as the official model does at every forward. Rebuilt every call: it costs well under 1 % of a
        batch-1 forward (benchmarks/benchmark_position_cache.py), so a cache would not pay for its invalidation."""
        table = self.position_embedding
        size = self.config.position_grid_size
        # Half-precision tables are resized in fp32 like the fp32-trained original; fp32/fp64 stay as they are.
        work = table if table.dtype in (torch.float32, torch.float64) else table.float()
        patches = work[1:].reshape(1, size, size, -1).permute(0, 3, 1, 2)
        if tuple(grid) != (size, size):
            patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([work[:1], patches.flatten(2)[0].t()], dim=0).to(dtype)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """pixel_values (B, 3, H, W) -> tokens (B, 1 + Sh*Sw, D) and the grid (Sh, Sw)."""
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        grid = tuple(patches.shape[-2:])
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1)
        return tokens + self.resized_position_embedding(grid, tokens.dtype), grid


class FaceptorEncoderMLP(nn.Module):
    def __init__(self, config: FaceptorConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = QuickGELU()
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


class FaceptorEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, config: FaceptorConfig, drop_path_rate: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = FaceptorAttention(config, config.hidden_size, config.num_attention_heads, fused_qkv=True)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = FaceptorEncoderMLP(config)
        self.drop_path = FaceptorDropPath(drop_path_rate, config.drop_path_mode)
        init_scheme("truncated_normal", self.self_attn.qkv_proj, self.self_attn.out_proj, self.mlp.fc1, self.mlp.fc2)

    def forward(self, hidden_states, output_attentions: bool = False):
        """(B, L, D) -> ((B, L, D), attention weights (B, heads, L, L) with ``output_attentions``, else None)."""
        attended, weights = self.self_attn(self.layer_norm1(hidden_states), output_attentions=output_attentions)
        hidden_states = hidden_states + self.drop_path(attended)
        return hidden_states + self.drop_path(self.mlp(self.layer_norm2(hidden_states))), weights


class FaceptorVisionEncoder(nn.Module):
    """FaRL ViT. Returns the patch tokens after the requested blocks only, and stops after the deepest one."""

    def __init__(self, config: FaceptorConfig):
        super().__init__()
        self.embeddings = FaceptorEncoderEmbeddings(config)
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        last = max(1, config.num_hidden_layers - 1)
        rates = [config.drop_path_rate * index / last for index in range(config.num_hidden_layers)]
        self.layers = nn.ModuleList(FaceptorEncoderLayer(config, rate) for rate in rates)

    def forward(self, pixel_values: torch.Tensor, levels, output_hidden_states: bool = False,
                output_attentions: bool = False):
        """pixel_values (B, 3, H, W) -> ({level: patch tokens (B, Sh*Sw, D)}, (Sh, Sw), hidden states or None,
        attention weights or None, last block's tokens or None).

        Features drop the class token and get no final norm. The encoder stops after the deepest requested level
        unless ``output_hidden_states`` or ``output_attentions`` asks for every block: then the third value is the
        tuple (embeddings after the pre-norm, block 0, ..., block L-1), each (B, 1 + Sh*Sw, D), and the fourth one
        (B, heads, 1 + Sh*Sw, 1 + Sh*Sw) per block. The fifth is block L-1's output (B, 1 + Sh*Sw, D), class token
        first, when the encoder got that far, else None."""
        hidden_states, grid = self.embeddings(pixel_values)
        hidden_states = self.pre_layernorm(hidden_states)
        wanted = set(levels)
        every_block = output_hidden_states or output_attentions or not wanted
        depth = len(self.layers) if every_block else max(wanted) + 1
        features, all_states = {}, [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for index, layer in enumerate(self.layers[:depth]):
            hidden_states, weights = layer(hidden_states, output_attentions=output_attentions)
            if index in wanted:
                features[index] = hidden_states[:, 1:]
            if all_states is not None:
                all_states.append(hidden_states)
            if all_attentions is not None:
                all_attentions.append(weights)
        return (features, grid, tuple(all_states) if all_states is not None else None,
                tuple(all_attentions) if all_attentions is not None else None,
                hidden_states if depth == len(self.layers) else None)


# ---------------------------------------------------------------------------------------------------------------
# Faceptor heads: query decoder with Layer-Attention, and the three readouts
# ---------------------------------------------------------------------------------------------------------------
def anchor_sine_code(grid: tuple[int, int], num_features: int, device, temperature: float = 10000.0) -> torch.Tensor:
    """(Sh*Sw, 2*num_features) code of the normalized token centers: y code then x code, each with interleaved
    sin/cos pairs sharing a frequency 2*pi / temperature**(2*(k//2)/num_features); tokens in row-major order."""
    height, width = grid
    y = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
    x = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
    dim = torch.arange(num_features, dtype=torch.float32, device=device)
    dim = temperature ** (2 * torch.div(dim, 2, rounding_mode="floor") / num_features)

    def code(v):
        v = v[:, None] * (2 * math.pi) / dim
        return torch.stack((v[:, 0::2].sin(), v[:, 1::2].cos()), dim=-1).flatten(1)

    cy, cx = code(y), code(x)
    grid_code = torch.cat([cy[:, None, :].expand(-1, width, -1), cx[None, :, :].expand(height, -1, -1)], dim=-1)
    return grid_code.flatten(0, 1)


class FaceptorPositionMLP(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class FaceptorDecoderLayer(GradientCheckpointingLayer):
    """Post-norm decoder layer in the order cross-attention -> self-attention -> FFN."""

    def __init__(self, config: FaceptorConfig):
        super().__init__()
        hidden, heads = config.decoder_hidden_size, config.decoder_num_attention_heads
        eps = config.decoder_layer_norm_eps
        self.cross_attn = FaceptorAttention(config, hidden, heads)
        self.cross_attn_layer_norm = nn.LayerNorm(hidden, eps=eps)
        self.self_attn = FaceptorAttention(config, hidden, heads)
        self.self_attn_layer_norm = nn.LayerNorm(hidden, eps=eps)
        self.fc1 = nn.Linear(hidden, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, hidden)
        self.final_layer_norm = nn.LayerNorm(hidden, eps=eps)
        for attention in (self.cross_attn, self.self_attn):
            init_scheme("fan_in_zero_bias", attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj)
        init_scheme("fan_in", self.fc1, self.fc2)

    def forward(self, queries, query_position, memory, memory_keys, self_attention_mask=None,
                output_attentions: bool = False):
        """queries (B, Q, H); query_position (1, Q, H); memory (B, M, H) values; memory_keys (B, M, H) = memory + pos;
        self_attention_mask (1, 1, Q, Q) additive, keeps tasks apart when several share the pass -> ((B, Q, H),
        cross-attention weights (B, heads, Q, M) with ``output_attentions``, else None)."""
        attended, cross_weights = self.cross_attn(queries + query_position, memory_keys, memory,
                                                  output_attentions=output_attentions)
        queries = self.cross_attn_layer_norm(queries + attended)
        positioned = queries + query_position
        attended, _ = self.self_attn(positioned, positioned, queries, attention_mask=self_attention_mask)
        queries = self.self_attn_layer_norm(queries + attended)
        return self.final_layer_norm(queries + self.fc2(F.relu(self.fc1(queries)))), cross_weights


class FaceptorQueryDecoder(nn.Module):
    """Task queries read the projected encoder levels. ``decoder_levels`` have projections + level embeddings;
    ``layer_attention_levels`` (Layer-Attention, stage 2) add their own projections and layer-aware embeddings."""

    def __init__(self, config: FaceptorConfig):
        super().__init__()
        self.config = config
        hidden = config.decoder_hidden_size
        query_tasks = [t for t in config.tasks if t.readout != "embedding"]
        self.query_content = nn.ParameterDict(
            {t.name: nn.Parameter(torch.zeros(t.num_queries, hidden)) for t in query_tasks})
        self.query_position = nn.ParameterDict(
            {t.name: nn.Parameter(torch.zeros(t.num_queries, hidden)) for t in query_tasks})
        self.level_projections = nn.ModuleList(nn.Linear(config.hidden_size, hidden) for _ in config.decoder_levels)
        self.level_embeddings = nn.Parameter(torch.zeros(len(config.decoder_levels), hidden))
        if config.layer_attention_levels:
            self.layer_attention_projections = nn.ModuleList(
                nn.Linear(config.hidden_size, hidden) for _ in config.layer_attention_levels)
            self.layer_attention_embeddings = nn.Parameter(torch.zeros(len(config.layer_attention_levels), hidden))
        self.position_mlp = FaceptorPositionMLP(hidden)
        self.layers = nn.ModuleList(FaceptorDecoderLayer(config) for _ in range(config.decoder_num_layers))
        init_scheme("standard_normal", self.query_content)
        init_scheme("unit_uniform", self.query_position)
        init_scheme("c2_xavier", *self.level_projections, *getattr(self, "layer_attention_projections", ()))

    @property
    def levels(self) -> list[int]:
        """Encoder levels in memory order."""
        return list(self.config.decoder_levels) + list(self.config.layer_attention_levels)

    def _level_parameters(self):
        pairs = list(zip(self.level_projections, self.level_embeddings))
        if self.config.layer_attention_levels:
            pairs += list(zip(self.layer_attention_projections, self.layer_attention_embeddings))
        return pairs

    def memory_positions(self, grid, dtype, device) -> torch.Tensor:
        """(1, M, H): sine anchor code through the position MLP, plus each level's embedding, levels concatenated."""
        hidden = self.config.decoder_hidden_size
        anchors = anchor_sine_code(grid, hidden // 2, device).to(self.position_mlp.fc1.weight.dtype)
        anchors = self.position_mlp(anchors)
        embeddings = [self.level_embeddings]
        if self.config.layer_attention_levels:
            embeddings.append(self.layer_attention_embeddings)
        embeddings = torch.cat(embeddings, dim=0)
        return (anchors[None] + embeddings[:, None]).flatten(0, 1)[None].to(dtype)

    def self_attention_mask(self, sizes: tuple[int, ...], dtype, device) -> torch.Tensor | None:
        """(1, 1, Q, Q) additive block-diagonal mask for several tasks in one pass (None for a single task)."""
        if len(sizes) < 2:
            return None
        owner = torch.cat([torch.full((size,), task, device=device) for task, size in enumerate(sizes)])
        blocked = owner[:, None] != owner[None, :]
        mask = torch.zeros(blocked.shape, dtype=dtype, device=device).masked_fill(blocked, torch.finfo(dtype).min)
        return mask[None, None]

    def forward(self, features: dict[int, torch.Tensor], grid, task_names: list[str], output_attentions: bool = False):
        """features {level: (B, S*S, D)} -> (queries (B, sum Q, H), pixel source (B, S*S, H) = projected first level,
        cross-attention weights (B, heads, sum Q, M) per layer with ``output_attentions``, else None).

        All tasks of ``task_names`` run in ONE pass; their queries only meet in self-attention, which the
        block-diagonal mask restricts to each task, so the result equals one pass per task.
        """
        projected = [projection(features[level])
                     for level, (projection, _) in zip(self.levels, self._level_parameters())]
        memory = torch.cat(projected, dim=1) if len(projected) > 1 else projected[0]
        memory_keys = memory + self.memory_positions(grid, memory.dtype, memory.device)
        batch = memory.shape[0]
        content = torch.cat([self.query_content[name] for name in task_names], dim=0).to(memory.dtype)
        position = torch.cat([self.query_position[name] for name in task_names], dim=0).to(memory.dtype)[None]
        queries = content[None].expand(batch, -1, -1)
        sizes = tuple(self.query_content[name].shape[0] for name in task_names)
        mask = self.self_attention_mask(sizes, memory.dtype, memory.device)
        cross_attentions = [] if output_attentions else None
        for layer in self.layers:
            queries, weights = layer(queries, position, memory, memory_keys, mask, output_attentions=output_attentions)
            if cross_attentions is not None:
                cross_attentions.append(weights)
        return queries, projected[0], tuple(cross_attentions) if cross_attentions is not None else None


class FaceptorRecognitionHead(nn.Module):
    """Per-token LayerNorm, mean over tokens, Linear-BN-Linear-BN -> embedding (not L2-normalized)."""

    def __init__(self, config: FaceptorConfig, embedding_size: int):
        super().__init__()
        d, eps = config.hidden_size, config.recognition_batch_norm_eps
        self.layer_norm = nn.LayerNorm(d, eps=1e-5)
        self.fc1 = nn.Linear(d, d, bias=False)
        self.batch_norm1 = nn.BatchNorm1d(d, eps=eps)
        self.fc2 = nn.Linear(d, embedding_size, bias=False)
        self.batch_norm2 = nn.BatchNorm1d(embedding_size, eps=eps)

    def forward(self, tokens):
        """tokens (B, S*S, D) -> (B, embedding_size)."""
        pooled = self.layer_norm(tokens).mean(dim=1)
        return self.batch_norm2(self.fc2(self.batch_norm1(self.fc1(pooled))))


class FaceptorValueHead(nn.Module):
    """One shared Linear(H -> 1) reads every value query: (B, Q, H) -> (B, Q) logits."""

    def __init__(self, config: FaceptorConfig):
        super().__init__()
        self.fc = nn.Linear(config.decoder_hidden_size, 1)

    def forward(self, queries):
        return self.fc(queries).squeeze(-1)


class FaceptorChannelLayerNorm(nn.Module):
    """LayerNorm over channels of a (B, C, h, w) map at every pixel (biased variance)."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class FaceptorMapHead(nn.Module):
    """Pixel path (two stride-2 transposed convs = 4x upsampling) shared by all map tasks of an image; each query
    becomes a map by a dot product of its 3-layer-MLP embedding with every pixel feature."""

    def __init__(self, config: FaceptorConfig):
        super().__init__()
        hidden = config.decoder_hidden_size
        self.upsample1 = nn.ConvTranspose2d(hidden, hidden, kernel_size=2, stride=2)
        self.norm = FaceptorChannelLayerNorm(hidden, config.map_norm_eps)
        self.upsample2 = nn.ConvTranspose2d(hidden, hidden, kernel_size=2, stride=2)
        self.query_mlp = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(3))

    def pixel_features(self, source, grid):
        """source (B, Sh*Sw, H) -> (B, H, 4Sh, 4Sw)."""
        x = source.transpose(1, 2).unflatten(2, grid)
        return self.upsample2(F.gelu(self.norm(self.upsample1(x))))

    def forward(self, queries, pixel_features):
        """queries (B, Q, H), pixel_features (B, H, h, w) -> (B, Q, h, w) logits."""
        for index, layer in enumerate(self.query_mlp):
            queries = layer(queries)
            if index < len(self.query_mlp) - 1:
                queries = F.relu(queries)
        return torch.einsum("bqc,bchw->bqhw", queries, pixel_features)


# ---------------------------------------------------------------------------------------------------------------
# Naive Faceptor heads
# ---------------------------------------------------------------------------------------------------------------
class FaceptorNaiveValueHead(nn.Module):
    """Per-level 3x3 convs, channel gate (avg- and max-pooled shared MLP), ReLU, global max pool, BN, 2-layer MLP,
    one classifier per task of this type."""

    def __init__(self, config: FaceptorConfig, tasks: list[dict]):
        super().__init__()
        d, c = config.hidden_size, config.naive_value_hidden_size
        self.level_convs = nn.ModuleList(nn.Conv2d(d, c // 4, 3, padding=1, bias=False) for _ in range(4))
        self.gate_fc1 = nn.Linear(c, c // config.naive_value_reduction)
        self.gate_fc2 = nn.Linear(c // config.naive_value_reduction, c)
        self.batch_norm = nn.BatchNorm1d(c, eps=config.recognition_batch_norm_eps)
        self.fc1 = nn.Linear(c, c)
        self.fc2 = nn.Linear(c, c)
        self.dropout = nn.Dropout(0.5)
        self.classifiers = nn.ModuleDict({t.name: nn.Linear(c, t.num_queries) for t in tasks})

    def trunk(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """4 maps (B, D, S, S) -> (B, C)."""
        x = torch.cat([conv(m) for conv, m in zip(self.level_convs, maps)], dim=1)
        gate = (self.gate_fc2(F.relu(self.gate_fc1(x.mean((2, 3)))))
                + self.gate_fc2(F.relu(self.gate_fc1(x.amax((2, 3))))))
        x = F.relu(x * torch.sigmoid(gate)[:, :, None, None]).amax((2, 3))
        x = self.batch_norm(x)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.dropout(F.relu(self.fc2(x)))


class FaceptorConvNormAct(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class FaceptorNaiveDenseHead(nn.Module):
    """UPerNet over a simple feature pyramid of 4 encoder levels (4x, 2x, 1x, 0.5x); one 1x1 classifier whose
    output channels are split between the tasks of this type. Output at 4x the token grid."""

    def __init__(self, config: FaceptorConfig, tasks: list[dict]):
        super().__init__()
        d, c = config.hidden_size, config.naive_dense_channels
        self.upsample4_deconv1 = nn.ConvTranspose2d(d, d, 2, stride=2)
        self.upsample4_norm = nn.BatchNorm2d(d)
        self.upsample4_deconv2 = nn.ConvTranspose2d(d, d, 2, stride=2)
        self.upsample2_deconv = nn.ConvTranspose2d(d, d, 2, stride=2)
        self.pool_scales = list(config.naive_pool_scales)
        self.pyramid_convs = nn.ModuleList(FaceptorConvNormAct(d, c, 1) for _ in self.pool_scales)
        self.bottleneck = FaceptorConvNormAct(d + len(self.pool_scales) * c, c, 3)
        self.lateral_convs = nn.ModuleList(FaceptorConvNormAct(d, c, 1) for _ in range(3))
        self.fpn_convs = nn.ModuleList(FaceptorConvNormAct(c, c, 3) for _ in range(3))
        self.fpn_bottleneck = FaceptorConvNormAct(4 * c, c, 3)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(c, sum(t.num_queries for t in tasks), 1)
        bounds = list(itertools.accumulate([0] + [t.num_queries for t in tasks]))
        self.task_slices = {t.name: (bounds[i], bounds[i + 1]) for i, t in enumerate(tasks)}

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """4 maps (B, D, S, S) -> (B, total outputs, 4S, 4S) logits."""
        up = lambda x, size: F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        pyramid = [
            self.upsample4_deconv2(F.gelu(self.upsample4_norm(self.upsample4_deconv1(maps[0])))),
            self.upsample2_deconv(maps[1]),
            maps[2],
            F.max_pool2d(maps[3], kernel_size=2, stride=2),
        ]
        top = pyramid[3]
        pooled = [up(conv(F.adaptive_avg_pool2d(top, scale)), top.shape[2:])
                  for scale, conv in zip(self.pool_scales, self.pyramid_convs)]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, pyramid[:3])]
        laterals.append(self.bottleneck(torch.cat([top] + pooled, dim=1)))
        for i in range(3, 0, -1):
            laterals[i - 1] = laterals[i - 1] + up(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:3])] + [laterals[3]]
        size = outs[0].shape[2:]
        fused = self.fpn_bottleneck(torch.cat([outs[0]] + [up(x, size) for x in outs[1:]], dim=1))
        return self.classifier(self.dropout(fused))


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------
class FaceptorPreTrainedModel(PreTrainedModel):
    config_class = FaceptorConfig
    config: FaceptorConfig
    base_model_prefix = "faceptor"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["FaceptorEncoderLayer", "FaceptorDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    # flex_attention is not claimed: on CPU (torch 2.13) it crashes the process; eager and SDPA are tested.
    _supports_flex_attn = False
    _supports_attention_backend = True

    _can_compile_fullgraph = True

    # ---- untrained (random) weights ------------------------------------------------------------------------------
    # A model built from a config has random weights until it is trained or loaded. That fact travels with the
    # model (and into config.json when such a model is saved), so every result computed from random weights can be
    # flagged, whatever path produced it.
    @property
    def is_untrained(self) -> bool:
        """True while the weights are random: set on construction, cleared by ``from_pretrained`` (unless the saved
        model was itself untrained), ``load_state_dict``, or by assigning False (e.g. after training)."""
        return bool(getattr(self, "_untrained", False))

    @is_untrained.setter
    def is_untrained(self, value: bool):
        self._untrained = bool(value)
        self.config.untrained = bool(value)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.is_untrained = False
        return result

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """Initialize the parameters a module owns directly (transformers calls this for every module whose own
        parameters are not loaded: fresh models, missing keys, new tasks), so each layer is set by its type and by
        the ``init_scheme`` its block tagged it with at construction.

        Official (lxq1000/Faceptor, its FaRL/CLIP encoder and "fan_in" decoder):
            * class and position embeddings: N(0, D^-0.5) (CLIP's ``scale * randn``);
            * decoder attention projections (``fan_in_zero_bias``): weight N(0, 1/fan_in), bias 0;
            * decoder FFN (``fan_in``): weight N(0, 1/fan_in), bias PyTorch's Linear default;
            * ``query_content`` (``query_feat``), level and Layer-Attention embeddings: N(0, 1);
            * ``query_position`` (``query_embed``): U(0, 1);
            * level / Layer-Attention input projections (``c2_xavier``): kaiming_uniform(a=1), bias 0;
            * position MLP (``adapt_pos2d``): PyTorch's Linear default.
        This package's choice (the official encoder always starts from FaRL weights):
            * encoder linears and the patch convolution (``truncated_normal``): truncated N(0, initializer_range),
              bias 0;
            * every other Linear / convolution / transposed convolution (recognition, value, map and Naive heads):
              PyTorch's default for the layer type;
            * norms: weight 1, bias 0; BatchNorm running mean 0, running variance 1, batch counter 0.
        """
        scheme = getattr(module, "init_scheme", None)
        if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            weight, bias = module.weight, module.bias
            fan_in = weight[0].numel()  # PyTorch's fan_in for Linear, Conv2d and ConvTranspose2d alike
            if scheme == "truncated_normal":
                init.trunc_normal_(weight, std=self.config.initializer_range)
            elif scheme in ("fan_in", "fan_in_zero_bias"):
                init.normal_(weight, std=fan_in**-0.5)
            elif scheme == "c2_xavier":
                init.kaiming_uniform_(weight, a=1)
            else:
                init.kaiming_uniform_(weight, a=math.sqrt(5))
            if bias is not None:
                if scheme in ("truncated_normal", "fan_in_zero_bias", "c2_xavier"):
                    init.zeros_(bias)
                else:
                    init.uniform_(bias, -(fan_in**-0.5), fan_in**-0.5)
        elif isinstance(module, nn.ParameterDict):
            for parameter in module.values():
                if scheme == "unit_uniform":
                    init.uniform_(parameter, 0.0, 1.0)
                else:
                    init.normal_(parameter)
        elif isinstance(module, FaceptorEncoderEmbeddings):
            scale = module.class_embedding.shape[0] ** -0.5
            init.normal_(module.class_embedding, std=scale)
            init.normal_(module.position_embedding, std=scale)
        elif isinstance(module, FaceptorQueryDecoder):
            init.normal_(module.level_embeddings)
            if self.config.layer_attention_levels:
                init.normal_(module.layer_attention_embeddings)
        elif isinstance(module, nn.LayerNorm | FaceptorChannelLayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)


class FaceptorModel(FaceptorPreTrainedModel):
    """Faceptor / Naive Faceptor for all configured tasks.

    ``model(pixel_values=x112, dense_pixel_values=x512, tasks=None)``: ``pixel_values`` (B, 3, 112, 112) in [-1, 1]
    feeds the 112-px tasks (recognition, age, attributes, expression); ``dense_pixel_values`` (B', 3, 512, 512) with
    CLIP mean/std feeds the 512-px tasks (parsing, landmarks). Either may be omitted; only the tasks it feeds run.
    Each input goes through the encoder once, and all decoder tasks of one input share one decoder pass.
    """

    def __init__(self, config: FaceptorConfig):
        super().__init__(config)
        saved_flag = bool(getattr(config, "untrained", False))
        self.encoder = FaceptorVisionEncoder(config)
        by_readout = {r: [t for t in config.tasks if t.readout == r] for r in ("embedding", "value", "map")}
        self.recognition_heads = nn.ModuleDict(
            {t.name: FaceptorRecognitionHead(config, t.embedding_size) for t in by_readout["embedding"]})
        if config.head_type == "faceptor":
            if by_readout["value"] or by_readout["map"]:
                self.decoder = FaceptorQueryDecoder(config)
            if by_readout["value"]:
                self.value_head = FaceptorValueHead(config)
            if by_readout["map"]:
                self.map_head = FaceptorMapHead(config)
        else:
            self.naive_value_heads = nn.ModuleDict()
            self.naive_dense_heads = nn.ModuleDict()
            for task_type in dict.fromkeys(t.type for t in by_readout["value"]):
                self.naive_value_heads[task_type] = FaceptorNaiveValueHead(
                    config, [t for t in by_readout["value"] if t.type == task_type])
            for task_type in dict.fromkeys(t.type for t in by_readout["map"]):
                self.naive_dense_heads[task_type] = FaceptorNaiveDenseHead(
                    config, [t for t in by_readout["map"] if t.type == task_type])
        self.post_init()
        self.is_untrained = True
        self._untrained_in_saved_config = saved_flag

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        result = super().from_pretrained(*args, **kwargs)
        # with output_loading_info=True transformers returns (model, loading_info)
        model = result[0] if isinstance(result, tuple) else result
        model.is_untrained = model._untrained_in_saved_config
        return result

    def get_input_embeddings(self) -> nn.Module:
        """The patch embedding convolution (B, 3, H, W) -> (B, D, H/16, W/16), as for ViT: the layer whose output
        ``enable_input_require_grads`` marks, so adapters on a frozen model get gradients through reentrant
        gradient checkpointing."""
        return self.encoder.embeddings.patch_embedding

    def set_input_embeddings(self, value: nn.Module):
        self.encoder.embeddings.patch_embedding = value

    # -- input checks ---------------------------------------------------------------------------------------------
    def _check_pixels(self, name: str, pixels: torch.Tensor):
        if not isinstance(pixels, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(pixels).__name__}")
        if pixels.ndim != 4 or pixels.shape[1] != self.config.num_channels:
            raise ValueError(
                f"{name} must have shape (batch, {self.config.num_channels}, height, width), got {tuple(pixels.shape)}")
        patch = self.config.patch_size
        if pixels.shape[0] == 0 or pixels.shape[2] < patch or pixels.shape[2] % patch or pixels.shape[3] % patch:
            raise ValueError(
                f"{name} has shape {tuple(pixels.shape)}: height and width must be positive multiples of the patch "
                f"size {patch} (112 for pixel_values, 512 for dense_pixel_values)")
        if not pixels.is_floating_point():
            raise TypeError(f"{name} must be a normalized floating-point tensor, got {pixels.dtype}; "
                            "use FaceptorImageProcessor to turn images into model inputs")

    def _select_tasks(self, tasks, inputs: dict[str, torch.Tensor | None]) -> list[FaceptorTask]:
        if all(pixels is None for pixels in inputs.values()):
            raise ValueError("give pixel_values (112-px tasks) and/or dense_pixel_values (512-px tasks)")
        if tasks is None:
            return [t for t in self.config.tasks if inputs.get(t.model_input) is not None]
        if isinstance(tasks, str):
            tasks = [tasks]
        selected = []
        for name in tasks:
            task = self.config.get_task(name)
            if inputs.get(task.model_input) is None:
                raise ValueError(f"task {name!r} reads {task.model_input}, which was not given")
            selected.append(task)
        return selected

    # -- forward --------------------------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor | None = None, dense_pixel_values: torch.Tensor | None = None,
                tasks: list[str] | str | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, output_attentions: bool | None = None, **kwargs) -> FaceptorOutput:
        """Run the selected tasks (all tasks whose input is given when ``tasks`` is None; ``tasks=[]`` runs only
        the encoder: of ``pixel_values`` for ``last_hidden_state``, of both inputs for ``output_hidden_states``).

        Returns [`FaceptorOutput`] with ``task_logits`` in the official raw form (see its docstring), decoded
        ``landmarks``, ``last_hidden_state`` and ``pooler_output`` (see [`FaceptorOutput`]), and, with
        ``output_hidden_states`` / ``output_attentions`` (defaults from the config), the
        encoder states / attention weights of each given input (and the decoder's cross-attention weights). The
        image processor's output holds only these inputs (its face geometry is apart, ``.geometry``), so
        ``model(**processor(...))`` works; any other keyword is an error.
        """
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}; FaceptorModel takes pixel_values, "
                            "dense_pixel_values, tasks, output_hidden_states, output_attentions and return_dict")
        if output_hidden_states is None:
            output_hidden_states = bool(getattr(self.config, "output_hidden_states", False))
        if output_attentions is None:
            output_attentions = bool(getattr(self.config, "output_attentions", False))
        inputs = {"pixel_values": pixel_values, "dense_pixel_values": dense_pixel_values}
        for name, pixels in inputs.items():
            if pixels is not None:
                self._check_pixels(name, pixels)
        selected = self._select_tasks(tasks, inputs)
        logits: dict[str, torch.Tensor] = {}
        states, attentions, cross_attentions, last_states = {}, {}, {}, {}
        for input_name, pixels in inputs.items():
            input_tasks = [t for t in selected if t.model_input == input_name]
            # with no task at all (tasks=[]), the 112-px encoder still runs: its last_hidden_state is the output
            encoder_only = not selected and input_name == "pixel_values"
            if pixels is not None and (input_tasks or output_hidden_states or output_attentions or encoder_only):
                (input_logits, states[input_name], attentions[input_name], cross_attentions[input_name],
                 last_states[input_name]) = self._run_input(pixels, input_tasks, output_hidden_states,
                                                            output_attentions)
                logits.update(input_logits)
        ordered = {t.name: logits[t.name] for t in selected}
        landmarks = {t.name: heatmap_centroids(ordered[t.name]) for t in selected
                     if get_task_type(t).spatial == "points"}
        recognition = next((t.name for t in selected if t.readout == "embedding"), None)
        pooled = None if recognition is None else normalized_embedding(ordered[recognition])
        output = FaceptorOutput(last_hidden_state=last_states.get("pixel_values"), pooler_output=pooled,
                                task_logits=ordered, landmarks=landmarks or None,
                                hidden_states=states.get("pixel_values"),
                                dense_hidden_states=states.get("dense_pixel_values"),
                                attentions=attentions.get("pixel_values"),
                                dense_attentions=attentions.get("dense_pixel_values"),
                                cross_attentions=cross_attentions.get("pixel_values"),
                                dense_cross_attentions=cross_attentions.get("dense_pixel_values"),
                                untrained=True if self.is_untrained else None)
        return output if return_dict is not False else output.to_tuple()

    def forward_task_batches(self, batches: dict) -> dict[str, torch.Tensor]:
        """Joint training: each task sees only its own images, and all tasks of one input share one encoder pass.

        Args:
            batches: ``{model_input: (pixels, [(task_name, start, stop), ...])}``; ``pixels`` (B, 3, S, S) is the
                concatenation of the tasks' batches, rows ``start:stop`` belonging to ``task_name``.

        Returns:
            ``{task_name: raw head output of its rows}`` in the form of ``FaceptorOutput.task_logits``.
        """
        out = {}
        for input_name, (pixels, task_row_ranges) in batches.items():
            self._check_pixels(input_name, pixels)
            tasks = [(self.config.get_task(name), start, stop) for name, start, stop in task_row_ranges]
            wrong = [task.name for task, _, _ in tasks if task.model_input != input_name]
            if wrong:
                raise ValueError(f"tasks {wrong} do not read {input_name}")
            features, grid, _, _, _ = self.encoder(pixels, self._levels_needed([task for task, _, _ in tasks]))
            for task, start, stop in tasks:
                rows = {level: tokens[start:stop] for level, tokens in features.items()}
                if task.readout == "embedding":
                    out[task.name] = self.recognition_heads[task.name](rows[self.config.recognition_layer])
                elif self.config.head_type == "faceptor":
                    out.update(self._run_decoder(rows, grid, [task])[0])
                else:
                    out.update(self._run_naive(rows, grid, [task]))
        return out

    def _levels_needed(self, input_tasks: list[FaceptorTask]) -> set[int]:
        config = self.config
        levels = set()
        for task in input_tasks:
            if task.readout == "embedding":
                levels.add(config.recognition_layer)
            elif config.head_type == "faceptor":
                levels.update(config.decoder_levels, config.layer_attention_levels)
            elif task.readout == "value":
                levels.update(config.naive_value_levels)
            else:
                levels.update(config.naive_dense_levels)
        return levels

    def _run_input(self, pixels: torch.Tensor, input_tasks: list[FaceptorTask], output_hidden_states: bool,
                   output_attentions: bool = False):
        """-> (task outputs, encoder hidden states, encoder attentions, decoder cross-attentions, last block's
        tokens); hidden states, attentions and cross-attentions are None unless asked for (cross-attentions also
        without decoder tasks), the last block's tokens None when the encoder stopped before it."""
        features, grid, states, attentions, last_state = self.encoder(pixels, self._levels_needed(input_tasks),
                                                                      output_hidden_states, output_attentions)
        out, cross_attentions = {}, None
        for task in input_tasks:
            if task.readout == "embedding":
                out[task.name] = self.recognition_heads[task.name](features[self.config.recognition_layer])
        query_tasks = [t for t in input_tasks if t.readout != "embedding"]
        if query_tasks:
            if self.config.head_type == "faceptor":
                decoded, cross_attentions = self._run_decoder(features, grid, query_tasks, output_attentions)
                out.update(decoded)
            else:
                out.update(self._run_naive(features, grid, query_tasks))
        return out, states, attentions, cross_attentions, last_state

    def _run_decoder(self, features, grid, query_tasks: list[FaceptorTask], output_attentions: bool = False):
        """-> (task outputs, cross-attention weights per decoder layer or None)."""
        names = [t.name for t in query_tasks]
        queries, source, cross_attentions = self.decoder(features, grid, names, output_attentions)
        pixel_features = None
        if any(t.readout == "map" for t in query_tasks):
            pixel_features = self.map_head.pixel_features(source, grid)
        out, start = {}, 0
        for task in query_tasks:
            task_queries = queries[:, start:start + task.num_queries]
            start += task.num_queries
            if task.readout == "value":
                out[task.name] = self.value_head(task_queries)
            else:
                out[task.name] = self.map_head(task_queries, pixel_features)
        return out, cross_attentions

    def _run_naive(self, features, grid, query_tasks: list[FaceptorTask]):
        def maps(levels):
            return [features[level].transpose(1, 2).unflatten(2, grid) for level in levels]

        out = {}
        for task_type in dict.fromkeys(t.type for t in query_tasks):
            typed = [t for t in query_tasks if t.type == task_type]
            if typed[0].readout == "value":
                head = self.naive_value_heads[task_type]
                trunk = head.trunk(maps(self.config.naive_value_levels))
                for task in typed:
                    out[task.name] = head.classifiers[task.name](trunk)
            else:
                head = self.naive_dense_heads[task_type]
                dense = head(maps(self.config.naive_dense_levels))
                for task in typed:
                    start, stop = head.task_slices[task.name]
                    out[task.name] = dense[:, start:stop]
        return out


__all__ = ["FaceptorModel", "FaceptorPreTrainedModel", "FaceptorOutput", "heatmap_centroids"]
