"""Partial FC (training.partial_fc): the sharded CosFace classifier equals the ordinary one, in one process and
split over two (gloo on CPU)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from faceptor_hf.training.losses import cosface_loss
from faceptor_hf.training.partial_fc import INIT_BLOCK_ROWS, PartialFC, initial_classifier_rows, shard_range


def test_blocks_cover_every_class_once():
    for classes, world in [(10, 2), (10, 3), (7, 8), (100_000, 64)]:
        ranges = [shard_range(classes, rank, world) for rank in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == classes
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(stop - start for start, stop in ranges) == -(-classes // world)


def test_initial_rows_do_not_depend_on_the_split():
    rows = INIT_BLOCK_ROWS + 37
    whole = initial_classifier_rows(0, rows, 8, seed=3)
    parts = torch.cat([initial_classifier_rows(0, 5, 8, seed=3), initial_classifier_rows(5, INIT_BLOCK_ROWS + 1, 8, 3),
                       initial_classifier_rows(INIT_BLOCK_ROWS + 1, rows, 8, 3)])
    assert torch.equal(whole, parts)
    assert whole.abs().max() <= 1 / 8**0.5
    assert not torch.equal(whole, initial_classifier_rows(0, rows, 8, seed=4))


def test_one_process_equals_cosface_loss_and_its_gradients():
    torch.manual_seed(0)
    head = PartialFC(16, 40, seed=1)
    embeddings = torch.randn(12, 16, requires_grad=True)
    labels = torch.randint(0, 40, (12,))
    loss = head(embeddings, labels)
    loss.backward()
    weight = head.weight.detach().clone().requires_grad_(True)
    reference_embeddings = embeddings.detach().clone().requires_grad_(True)
    reference = cosface_loss(reference_embeddings, weight, labels)
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(head.weight.grad, weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(embeddings.grad, reference_embeddings.grad, rtol=1e-5, atol=1e-6)
    assert int(head.step) == 1


def test_sampling_keeps_the_batch_labels_and_is_seeded_by_step():
    head = PartialFC(8, 1000, sample_rate=0.1, seed=5)
    labels = torch.tensor([3, 998, 500, 3])
    chosen = head.sampled_classes(labels)
    assert chosen.numel() == 100 and {3, 998, 500} <= set(chosen.tolist())
    assert torch.equal(chosen, torch.sort(chosen).values)
    assert torch.equal(chosen, head.sampled_classes(labels))
    head.step += 1
    assert not torch.equal(chosen, head.sampled_classes(labels))
    assert PartialFC(8, 1000, sample_rate=1.0).sampled_classes(labels) is None


def test_sampled_loss_is_cosface_over_the_sampled_classes():
    head = PartialFC(8, 300, sample_rate=0.2, seed=2)
    embeddings, labels = torch.randn(6, 8), torch.tensor([0, 299, 150, 7, 7, 42])
    chosen = head.sampled_classes(labels)
    loss = head(embeddings, labels)
    remapped = torch.searchsorted(chosen, labels)
    reference = cosface_loss(embeddings, head.weight.detach()[chosen], remapped)
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fields, message", [
    (dict(embedding_size=8, num_classes=10, sample_rate=0.0), "sample_rate"),
    (dict(embedding_size=8, num_classes=10, sample_rate=1.5), "sample_rate"),
    (dict(embedding_size=8, num_classes=0), "num_classes"),
    (dict(embedding_size=8, num_classes=10, rank=2, world_size=2), "rank 2"),
])
def test_bad_settings_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        PartialFC(**fields)


def test_bad_inputs_are_named():
    head = PartialFC(8, 10)
    with pytest.raises(ValueError, match=r"shape \(b, 8\)"):
        head(torch.randn(4, 7), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="one label per embedding"):
        head(torch.randn(4, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0 \.\. 9"):
        head(torch.randn(2, 8), torch.tensor([1, 10]))
    with pytest.raises(ValueError, match="does not fit"):
        head.load_full_weight(torch.zeros(11, 8))


# ---- two processes --------------------------------------------------------------------------------------------
CLASSES, WIDTH, SIZES = 23, 16, (3, 5)  # 23 classes over 2 processes: blocks of 12 and 11; uneven batches


def _global_batch():
    generator = torch.Generator().manual_seed(11)
    embeddings = torch.randn(sum(SIZES), WIDTH, generator=generator)
    labels = torch.randint(0, CLASSES, (sum(SIZES),), generator=generator)
    labels[0], labels[-1] = 0, CLASSES - 1  # both blocks hold a label
    return embeddings, labels


def _worker(rank: int, world: int, init_file: str, sample_rate: float, results: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        embeddings, labels = _global_batch()
        start = sum(SIZES[:rank])
        mine = embeddings[start:start + SIZES[rank]].clone().requires_grad_(True)
        head = PartialFC(WIDTH, CLASSES, sample_rate=sample_rate, seed=4)
        chosen = head.sampled_classes(labels)
        loss = head(mine, labels[start:start + SIZES[rank]])
        loss.backward()
        torch.save({"loss": loss.detach(), "embedding_grad": mine.grad, "weight": head.weight.detach(),
                    "weight_grad": head.weight.grad, "range": (head.start, head.stop), "chosen": chosen,
                    "full_weight": head.full_weight(), "squared_norm": head.squared_gradient_norm()},
                   os.path.join(results, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run_two_processes(tmp_path, sample_rate: float) -> list[dict]:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), sample_rate, str(tmp_path)), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.slow
def test_two_processes_equal_the_whole_classifier(tmp_path):
    ranks = _run_two_processes(tmp_path, 1.0)
    embeddings, labels = _global_batch()
    full = initial_classifier_rows(0, CLASSES, WIDTH, seed=4).requires_grad_(True)
    embeddings.requires_grad_(True)
    reference = cosface_loss(embeddings, full, labels)
    reference.backward()
    assert [r["range"] for r in ranks] == [(0, 12), (12, 23)]
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result["loss"], reference.detach(), rtol=1e-6, atol=1e-6)
        start, stop = result["range"]
        torch.testing.assert_close(result["weight_grad"], full.grad[start:stop], rtol=1e-5, atol=1e-6)
        first = sum(SIZES[:rank])
        # x W: DDP's averaging of the encoder's gradients divides by the process count again
        torch.testing.assert_close(result["embedding_grad"], 2 * embeddings.grad[first:first + SIZES[rank]],
                                   rtol=1e-5, atol=1e-6)
        assert torch.equal(result["full_weight"], full.detach())
        torch.testing.assert_close(result["squared_norm"], full.grad.pow(2).sum(), rtol=1e-5, atol=1e-9)
    head = PartialFC(WIDTH, CLASSES, rank=1, world_size=3)
    head.load_full_weight(ranks[0]["full_weight"])  # re-sharded for another process count
    assert torch.equal(head.weight.detach(), full.detach()[8:16])


@pytest.mark.slow
def test_two_processes_with_sampling_equal_cosface_over_the_sampled_classes(tmp_path):
    ranks = _run_two_processes(tmp_path, 0.5)
    embeddings, labels = _global_batch()
    chosen = torch.cat([r["chosen"] + r["range"][0] for r in ranks])
    assert set(labels.tolist()) <= set(chosen.tolist())
    full = initial_classifier_rows(0, CLASSES, WIDTH, seed=4)
    reference = cosface_loss(embeddings, full[chosen], torch.searchsorted(chosen, labels))
    for result in ranks:
        torch.testing.assert_close(result["loss"], reference, rtol=1e-6, atol=1e-6)


class _GlooAccelerator:
    """The part of an Accelerator that the overflow check uses, over the gloo process group."""

    device = torch.device("cpu")
    num_processes = 2

    @staticmethod
    def reduce(tensor, reduction="sum"):
        dist.all_reduce(tensor)
        return tensor


def _overflow_worker(rank: int, init_file: str, results: str):
    from types import SimpleNamespace

    from faceptor_hf.training.trainer import FaceptorTrainer

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        head = PartialFC(WIDTH, CLASSES)
        head.weight.grad = torch.ones_like(head.weight)
        if rank == 1:
            head.weight.grad[0, 0] = float("inf")  # fp16 gradients overflowed in process 1's block only
        trainer = SimpleNamespace(sharded_classifiers={"recog": head}, accelerator=_GlooAccelerator())
        FaceptorTrainer._share_classifier_overflow(trainer)
        torch.save(bool(torch.isfinite(head.weight.grad).all()), os.path.join(results, f"finite{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_an_overflow_in_one_block_skips_the_step_on_every_process(tmp_path):
    mp.spawn(_overflow_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    assert [torch.load(tmp_path / f"finite{rank}.pt") for rank in range(2)] == [False, False]
