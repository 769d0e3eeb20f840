"""Partial FC: the CosFace classifier of a recognition task split over the processes of a run.

A face-recognition training set can hold millions of identities (WebFace42M: 2 million). Its CosFace classifier is
a (K, D) matrix: at K = 2M and D = 512 that is 4 GB of fp32 weights, 4 GB of gradient and 8 GB of AdamW state on
every GPU when each process holds all of it, and the whole gradient is all-reduced every step. Partial FC (An et
al., "Partial FC: Training 10 Million Identities on a Single Machine", ICCVW 2021; insightface's ``arcface_torch``)
gives each of the W processes one contiguous block of ceil(K / W) classes instead:

1. the embeddings and labels of every process are all-gathered (the embeddings with their gradient);
2. each process computes the logits of the whole gathered batch against its own block only, applying the margin
   where a sample's label falls in its block;
3. the softmax cross-entropy is assembled from the all-reduced row maximum, the all-reduced sum of exponentials and
   the all-reduced target logit, so every process holds the same loss: the mean over the global batch.

With ``sample_rate`` < 1 each process scores only a sample of its block per step: every class that is the label of
some sample of the global batch, plus random other classes up to ``sample_rate`` of the block. The choice is drawn
from a generator seeded by (seed, step, rank), and the step counter is a buffer of the module, so a resumed run
draws the same classes.

Gradients, and why they equal the ordinary classifier's: with the ordinary classifier each process computes the
mean loss of its own b samples and DDP averages gradients, which is the gradient of the global mean. Here every
process computes the global mean directly; its classifier block gets the exact gradient of that mean (blocks are not
synchronized: they must be left out of DDP, see ``ignored_by_ddp``), and the gathered embeddings' gradients are
summed over the processes and multiplied by W on the way back, so that DDP's averaging of the encoder gradients
divides that factor out again.

Checkpoints hold the whole classifier whatever the process count: the module's ``state_dict`` gathers the blocks
into one (K, D) ``weight`` (a collective: every process calls it, as ``accelerator.save_state`` does) and
``load_state_dict`` takes this process's block of a (K, D) one, so a checkpoint of W processes loads on any other
number; ``shard_optimizer_state`` does the same for the optimizer's per-class state (AdamW moments), and
``clip_grad_norm_`` clips by the norm of the whole gradient, the blocks of every process included.

Shapes: b = per-process batch, B = global batch (sum of b), D = embedding width, K = classes, k = local classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

# Rows drawn per seeded block when initializing a classifier: any split of the rows over processes then gets the
# same values as one process initializing the whole matrix.
INIT_BLOCK_ROWS = 4096


def initial_classifier_rows(start: int, stop: int, width: int, seed: int = 0) -> torch.Tensor:
    """Rows ``start`` .. ``stop`` - 1 of the initial (K, D) CosFace classifier: uniform in (-1/sqrt(D), 1/sqrt(D)).

    Every block of ``INIT_BLOCK_ROWS`` rows has its own generator seeded from (seed, block), so the rows do not
    depend on how the matrix is split: ``cat([rows(0, 5), rows(5, K)]) == rows(0, K)``, which lets a sharded and an
    ordinary run start from the same classifier. Returns a float32 (stop - start, width) tensor.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"classifier rows {start}..{stop} are not a range")
    bound = 1.0 / math.sqrt(width)
    parts = []
    for block in range(start // INIT_BLOCK_ROWS, -(-stop // INIT_BLOCK_ROWS)):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + block)
        values = torch.empty(INIT_BLOCK_ROWS, width).uniform_(-bound, bound, generator=generator)
        first = block * INIT_BLOCK_ROWS
        parts.append(values[max(start - first, 0):min(stop - first, INIT_BLOCK_ROWS)])
    return torch.cat(parts) if parts else torch.empty(0, width)


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """The classes [start, stop) that process ``rank`` of ``world_size`` holds: contiguous blocks of
    ceil(K / W); the last blocks may be smaller or empty when W does not divide K."""
    block = -(-num_classes // world_size)
    start = min(num_classes, rank * block)
    return start, min(num_classes, start + block)


def _process_group_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_blocks(local: torch.Tensor, num_classes: int, world_size: int) -> torch.Tensor:
    """(k, ...) rows of this process's block -> (K, ...) rows of all blocks in class order (a collective)."""
    block = -(-num_classes // world_size)
    padded = local.new_zeros(block, *local.shape[1:])
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat(parts)[:num_classes].clone()  # its own storage: safetensors refuses a view of a larger one


class _GatherEmbeddings(torch.autograd.Function):
    """All-gather (b, D) per process -> (B, D); backward sums the gathered gradient over the processes, keeps this
    process's rows and multiplies them by W (DDP's gradient averaging divides by W again)."""

    @staticmethod
    def forward(ctx, embeddings: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        rank, world = _process_group_size()
        ctx.rank, ctx.world, ctx.sizes = rank, world, sizes
        padded = embeddings.new_zeros(max(sizes), embeddings.shape[1])
        padded[:embeddings.shape[0]] = embeddings
        gathered = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded.contiguous())
        return torch.cat([part[:size] for part, size in zip(gathered, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]] * ctx.world, None


def _gather_labels(labels: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    padded = labels.new_full((max(sizes),), -1)
    padded[:labels.shape[0]] = labels
    gathered = [torch.empty_like(padded) for _ in range(len(sizes))]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes)])


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over the classes of all processes, each holding the logits of its classes.

    forward(logits (B, k), targets (B,) local class index or -1 where the label is another process's) -> scalar.
    The backward is the exact derivative of the global mean for the local logits: (softmax - one_hot) / B.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, distributed: bool) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        if logits.shape[1]:
            row_max = logits.max(dim=1).values
        else:
            row_max = logits.new_full((logits.shape[0],), float("-inf"))
        if distributed:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        exponentials = torch.exp(logits - row_max[:, None])
        total = exponentials.sum(dim=1)
        local = targets >= 0
        target_logit = torch.zeros_like(row_max)
        target_logit[local] = logits[rows[local], targets[local]]
        if distributed:
            dist.all_reduce(total)
            dist.all_reduce(target_logit)
        ctx.save_for_backward(exponentials / total[:, None], targets)
        return (torch.log(total) + row_max - target_logit).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        probabilities, targets = ctx.saved_tensors
        local = targets >= 0
        gradient = probabilities.clone()
        rows = torch.arange(gradient.shape[0], device=gradient.device)
        gradient[rows[local], targets[local]] -= 1.0
        return gradient * (grad / gradient.shape[0]), None, None


class PartialFC(nn.Module):
    """CosFace classifier of ``num_classes`` identities, this process's block of it as ``weight`` (k, D).

    ``forward(embeddings (b, D), labels (b,)) -> loss``: the mean over the global batch of
    cross_entropy(s * (cos(x, W) - m * one_hot)), with cos = x.W / max(|x| |W|, 1e-8) in float32 as the official
    ``MarginCosineProductLoss``. In one process, at ``sample_rate`` 1, it equals
    ``training.losses.cosface_loss(embeddings, full_weight, labels)``.

    Args:
        embedding_size: D.
        num_classes: K, identities 0 .. K-1.
        scale, margin: CosFace s and m (official: 64, 0.4).
        sample_rate: share of this process's classes scored per step, in (0, 1]; the labels of the global batch
            are always among them.
        seed: seeds the initial weights (``initial_classifier_rows``) and the class sampling.
        rank, world_size: this process's place (default: the initialized process group, else 0 of 1).
    """

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.4,
                 sample_rate: float = 1.0, seed: int = 0, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        if embedding_size < 1 or num_classes < 1:
            raise ValueError(f"PartialFC needs embedding_size and num_classes >= 1, got {embedding_size} and "
                             f"{num_classes}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"PartialFC sample_rate must be in (0, 1], got {sample_rate}")
        group_rank, group_size = _process_group_size()
        self.rank = group_rank if rank is None else rank
        self.world_size = group_size if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"PartialFC rank {self.rank} is not in 0 .. {self.world_size - 1}")
        self.embedding_size, self.num_classes = embedding_size, num_classes
        self.scale, self.margin, self.sample_rate, self.seed = scale, margin, sample_rate, seed
        self.start, self.stop = shard_range(num_classes, self.rank, self.world_size)
        self.weight = nn.Parameter(initial_classifier_rows(self.start, self.stop, embedding_size, seed))
        # Sampling draws from (seed, step, rank); the step is saved with the module so a resumed run draws alike.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_state_dict_post_hook(_save_whole_weight)
        self.register_load_state_dict_pre_hook(_load_own_block)

    def extra_repr(self) -> str:
        return (f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, classes=[{self.start}, "
                f"{self.stop}) of rank {self.rank}/{self.world_size}, scale={self.scale}, margin={self.margin}, "
                f"sample_rate={self.sample_rate}")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def _check_group(self):
        if self.distributed and _process_group_size() != (self.rank, self.world_size):
            raise RuntimeError(f"PartialFC was built for rank {self.rank} of {self.world_size} processes, but the "
                               f"process group is {_process_group_size()}")

    def sampled_classes(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Local class indices (sorted, int64) scored this step, or None for all of them (``sample_rate`` 1).

        labels: (B,) labels of the global batch. Every local class that is one of them is kept; the rest of the
        ceil(sample_rate * k) places are filled at random."""
        count = self.stop - self.start
        wanted = math.ceil(self.sample_rate * count)
        if self.sample_rate >= 1.0 or wanted >= count:
            return None
        positives = torch.unique(labels[(labels >= self.start) & (labels < self.stop)]) - self.start
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + int(self.step)) * 65_537 + self.rank)
        priority = torch.rand(count, generator=generator)
        priority[positives.cpu()] = 2.0  # positives first
        chosen = torch.topk(priority, max(wanted, positives.numel())).indices
        return torch.sort(chosen).values.to(labels.device)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embeddings (b, D) raw recognition outputs of this process, labels (b,) int64 -> fp32 scalar loss, the
        same value on every process."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"PartialFC expects embeddings of shape (b, {self.embedding_size}), got "
                             f"{tuple(embeddings.shape)}")
        if labels.shape != embeddings.shape[:1]:
            raise ValueError(f"PartialFC expects one label per embedding, got labels {tuple(labels.shape)} for "
                             f"embeddings {tuple(embeddings.shape)}")
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"PartialFC labels must be in 0 .. {self.num_classes - 1}, got "
                             f"{int(labels.min())} .. {int(labels.max())}")
        self._check_group()
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            embeddings = embeddings.float()
            if self.distributed:
                sizes = torch.tensor([embeddings.shape[0]], device=embeddings.device)
                all_sizes = [torch.empty_like(sizes) for _ in range(self.world_size)]
                dist.all_gather(all_sizes, sizes)
                sizes_list = [int(size) for size in all_sizes]
                embeddings = _GatherEmbeddings.apply(embeddings, sizes_list)
                labels = _gather_labels(labels, sizes_list)
            weight = self.weight.float()
            targets = labels - self.start
            targets = torch.where((targets >= 0) & (labels < self.stop), targets, torch.full_like(targets, -1))
            chosen = self.sampled_classes(labels) if self.training else None
            if chosen is not None:
                weight = weight[chosen]
                position = torch.full((self.stop - self.start,), -1, dtype=torch.long, device=labels.device)
                position[chosen] = torch.arange(chosen.numel(), device=labels.device)
                targets = torch.where(targets >= 0, position[targets.clamp(min=0)], targets)
            if self.training:
                self.step += 1
            norms = torch.outer(embeddings.norm(dim=1), weight.norm(dim=1)).clamp(min=1e-8)
            cosine = (embeddings @ weight.t()) / norms
            local = targets >= 0
            rows = torch.arange(cosine.shape[0], device=cosine.device)
            margins = torch.zeros_like(cosine)
            margins[rows[local], targets[local]] = self.margin
            return _ShardedCrossEntropy.apply(self.scale * (cosine - margins), targets, self.distributed)

    @torch.no_grad()
    def full_weight(self) -> torch.Tensor:
        """(K, D) the whole classifier, all-gathered from the processes (a collective: every process calls it).
        This is what checkpoints store, so that a run resumes on any number of processes."""
        self._check_group()
        if not self.distributed:
            return self.weight.detach().clone()
        return _gather_blocks(self.weight.detach(), self.num_classes, self.world_size)

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """(k, ...) per-class values of this process's block (e.g. an optimizer moment of ``weight``) -> (K, ...)
        of the whole classifier (a collective when distributed)."""
        self._check_group()
        return _gather_blocks(local, self.num_classes, self.world_size) if self.distributed else local

    def own_rows(self, whole: torch.Tensor) -> torch.Tensor:
        """(K, ...) per-class values of the whole classifier -> a copy of this process's (k, ...) rows."""
        return whole[self.start:self.stop].clone()

    @torch.no_grad()
    def load_full_weight(self, weight: torch.Tensor) -> None:
        """Take this process's block from a (K, D) classifier (``full_weight`` of any number of processes, or an
        ordinary run's classifier)."""
        if tuple(weight.shape) != (self.num_classes, self.embedding_size):
            raise ValueError(f"classifier of shape {tuple(weight.shape)} does not fit PartialFC of "
                             f"{self.num_classes} classes x {self.embedding_size}")
        self.weight.copy_(weight[self.start:self.stop])

    def squared_gradient_norm(self) -> torch.Tensor:
        """Sum of the squared gradients of every process's block (a collective when distributed): the classifier's
        share of a global gradient norm for clipping. Returns a float32 scalar on the weight's device."""
        grad = self.weight.grad
        total = (grad.float().pow(2).sum() if grad is not None
                 else torch.zeros((), device=self.weight.device))
        if self.distributed:
            dist.all_reduce(total)
        return total

    def ignored_by_ddp(self, prefix: str) -> list[str]:
        """Names (with the module's ``prefix`` in the wrapped model) of the tensors DDP must neither broadcast nor
        average: each process's block is its own."""
        return [f"{prefix}weight", f"{prefix}step"]


def _save_whole_weight(module: PartialFC, state_dict: dict, prefix: str, local_metadata) -> None:
    """state_dict post-hook: the (K, D) classifier in place of this process's block."""
    if module.distributed:
        state_dict[prefix + "weight"] = module.full_weight()


def _load_own_block(module: PartialFC, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: a (K, D) classifier (a checkpoint of any process count, or an ordinary
    classifier) is cut to this process's block; a block of this size loads as it is."""
    key = prefix + "weight"
    weight = state_dict.get(key)
    if weight is not None and weight.dim() == 2 and weight.shape[0] == module.num_classes:
        state_dict[key] = module.own_rows(weight)


def _per_class_state(optimizer: torch.optim.Optimizer, heads: list[PartialFC]):
    """(state index, head) for each head whose ``weight`` the optimizer updates (the index of its entry in
    ``optimizer.state_dict()["state"]``: its position over the parameter groups)."""
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    for head in heads:
        for index, parameter in enumerate(parameters):
            if parameter is head.weight:
                yield index, head


def shard_optimizer_state(optimizer: torch.optim.Optimizer, heads: Iterable[PartialFC]) -> None:
    """Make ``optimizer``'s checkpoints hold the whole classifier's per-class state.

    Its ``state_dict()`` (then a collective: every process calls it) holds, for each head's ``weight``, every
    state tensor of the block's shape (AdamW's ``exp_avg`` and ``exp_avg_sq``) gathered to (K, D); its
    ``load_state_dict`` takes this process's rows of such (K, D) tensors. Scalars (AdamW's ``step``) are the same
    on every process and stay as they are."""
    heads = list(heads)

    def gather(_, state_dict: dict) -> dict:
        state = dict(state_dict["state"])
        for index, head in _per_class_state(optimizer, heads):
            if index in state:
                state[index] = {key: head.gather_rows(value) if _is_per_class(value, head.weight.shape) else value
                                for key, value in sorted(state[index].items())}
        return {**state_dict, "state": state}

    def scatter(_, state_dict: dict) -> dict:
        state = dict(state_dict["state"])
        for index, head in _per_class_state(optimizer, heads):
            whole = (head.num_classes, head.embedding_size)
            if index in state:
                state[index] = {key: head.own_rows(value) if _is_per_class(value, whole) else value
                                for key, value in state[index].items()}
        return {**state_dict, "state": state}

    optimizer.register_state_dict_post_hook(gather)
    optimizer.register_load_state_dict_pre_hook(scatter)


def _is_per_class(value, shape: torch.Size | tuple) -> bool:
    return torch.is_tensor(value) and value.dim() >= 1 and tuple(value.shape) == tuple(shape)


def clip_grad_norm_(parameters: Iterable[torch.nn.Parameter], max_norm: float,
                    heads: Iterable[PartialFC]) -> torch.Tensor:
    """Scale the gradients of ``parameters`` (the model's, among them the ``weight`` of each head) so that the
    norm of the whole gradient is at most ``max_norm``, as ``torch.nn.utils.clip_grad_norm_`` does with the
    ordinary classifier: the other parameters' gradients are the same on every process (DDP averaged them), each
    head adds the squared gradient of every process's block (a collective). Returns the norm before clipping,
    the same on every process."""
    heads = list(heads)
    own = {id(head.weight) for head in heads}
    parameters = [parameter for parameter in parameters if parameter.grad is not None]
    shared = [parameter.grad for parameter in parameters if id(parameter) not in own]
    device = heads[0].weight.device if heads else (shared[0].device if shared else torch.device("cpu"))
    squared = (torch.nn.utils.get_total_norm(shared).float().to(device) ** 2 if shared
               else torch.zeros((), device=device))
    for head in heads:
        squared = squared + head.squared_gradient_norm().to(device)
    total = squared.sqrt()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total


__all__ = ["INIT_BLOCK_ROWS", "PartialFC", "clip_grad_norm_", "initial_classifier_rows", "shard_optimizer_state",
           "shard_range"]
