"""Partial FC: classifier memory per process and classifier step time, whole vs sharded CosFace classifier.

For K identities and W processes, the ordinary classifier keeps all K x D weights on every process (plus their
gradient and two AdamW moments: 16 bytes per weight in fp32) and all-reduces the K x D gradient every step. The
sharded one (``training.partial_fc.PartialFC``) keeps ceil(K / W) rows per process and all-gathers only the
embeddings (B x D). Memory is computed from the shard size (exact for the parameter, gradient and AdamW state; the
logits add B x k floats a few times over, listed apart). Step time is measured in this process for the classifier
part of one step (CosFace forward, backward and the AdamW update of the local rows) at the per-process batch
``--batch`` (global batch = batch x W), for every configuration whose local state fits ``--max-local-gib`` and
whose logits fit ``--max-logits-gib`` (the run needs a few times that: a shared machine must not run out of memory);
the collectives are not part of the measurement (one process), their volume is listed instead.

    python benchmarks/benchmark_partial_fc.py [--classes 100000 1000000 2000000] [--processes 1 2 8 64]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from faceptor_hf.training.losses import cosface_loss
from faceptor_hf.training.partial_fc import PartialFC

GIB = 1024**3


def classifier_step_seconds(local_classes: int, width: int, global_batch: int, iters: int, sharded: bool) -> float:
    """Seconds of one classifier step: forward, backward, AdamW on the (local_classes, width) rows."""
    torch.manual_seed(0)
    embeddings = torch.randn(global_batch, width, requires_grad=True)
    labels = torch.randint(0, local_classes, (global_batch,))
    if sharded:
        head = PartialFC(width, local_classes)  # one process: the local block of a W-process run
        parameters, step = [head.weight], (lambda: head(embeddings, labels))
    else:
        weight = torch.nn.Parameter(torch.empty(local_classes, width).uniform_(-0.04, 0.04))
        parameters, step = [weight], (lambda: cosface_loss(embeddings, weight, labels))
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)

    def once():
        optimizer.zero_grad(set_to_none=True)
        step().backward()
        optimizer.step()

    once()
    start = time.perf_counter()
    for _ in range(iters):
        once()
    return (time.perf_counter() - start) / iters


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[100_000, 1_000_000, 2_000_000])
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 8, 64])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128, help="per-process batch (official recognition: 128)")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--max-local-gib", type=float, default=1.0,
                        help="measure step time only where the local classifier state is at most this")
    parser.add_argument("--max-logits-gib", type=float, default=1.0,
                        help="... and where the (global batch, local classes) logits estimate is at most this")
    args = parser.parse_args(argv)
    rows = []
    for classes in args.classes:
        for processes in [1, *args.processes]:
            local = -(-classes // processes) if processes > 1 else classes
            global_batch = args.batch * processes
            state_gib = local * args.width * 16 / GIB  # weight + gradient + two AdamW moments, fp32
            row = {"classes": classes, "processes": processes, "layout": "whole" if processes == 1 else "sharded",
                   "local_classes": local, "state_gib_per_process": round(state_gib, 3),
                   "whole_state_gib_per_process": round(classes * args.width * 16 / GIB, 3),
                   "logits_gib_per_process": round(global_batch * local * 4 * 3 / GIB, 3),
                   "step_comm_mib": round((classes * args.width * 4 if processes == 1 else
                                           global_batch * args.width * 4) / 2**20, 1)}
            if state_gib <= args.max_local_gib and row["logits_gib_per_process"] <= args.max_logits_gib:
                row["classifier_step_s"] = round(classifier_step_seconds(local, args.width, global_batch, args.iters,
                                                                         sharded=processes > 1), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
