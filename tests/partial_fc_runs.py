"""The training runs of ``test_training_partial_fc.py``, in the processes ``accelerate launch`` starts (not a test
file): ``python partial_fc_runs.py CONFIG.json OUTPUT_ROOT``.

CONFIG.json is a training config whose recognition task is ``recog_ms1mv3``. One after another, in the same
processes, it trains into OUTPUT_ROOT/<run>:

- ``whole``: the ordinary classifier (the whole (K, D) matrix on every process);
- ``sharded``: ``classifier: {sharded: true, sample_rate: 1.0}``;
- ``sampled``: ``classifier: {sharded: true, sample_rate: 0.3}``;
- ``sampled_resumed``: the same, stopped right after its first checkpoint and resumed from it by a new trainer.

Each run's main process writes ``logged.json``: every ``accelerator.log`` call of the run as [step, values].
"""

import copy
import json
import os
import sys

from faceptor_hf.training.config import parse_config
from faceptor_hf.training.trainer import FaceptorTrainer

CLASSIFIERS = {"whole": None, "sharded": {"sharded": True, "sample_rate": 1.0},
               "sampled": {"sharded": True, "sample_rate": 0.3}, "sampled_resumed": {"sharded": True,
                                                                                      "sample_rate": 0.3}}


class Stopped(Exception):
    """Raised on every process right after the first checkpoint of the interrupted run."""


def trainer_for(base: dict, run: str, root: str, logged: list) -> FaceptorTrainer:
    config = copy.deepcopy(base)
    config["run"]["output_dir"] = os.path.join(root, run)
    if CLASSIFIERS[run] is not None:
        config["tasks"]["recog_ms1mv3"]["classifier"] = CLASSIFIERS[run]
    trainer = FaceptorTrainer(parse_config(config))
    log = trainer.accelerator.log

    def record(values, step=None, **kwargs):
        logged.append([step, values])
        return log(values, step=step, **kwargs)

    trainer.accelerator.log = record
    return trainer


def main(config_path: str, root: str):
    with open(config_path) as handle:
        base = json.load(handle)
    for run in CLASSIFIERS:
        logged = []
        trainer = trainer_for(base, run, root, logged)
        if run == "sampled_resumed":
            save = trainer.save_checkpoint

            def save_then_stop():
                save()
                raise Stopped(f"stopped after the checkpoint of step {trainer.step}")

            trainer.save_checkpoint = save_then_stop
            try:
                trainer.train()
            except Stopped:
                pass
            trainer = trainer_for(base, run, root, logged)
            trainer.train(resume_from="latest")
        else:
            trainer.train()
        if trainer.accelerator.is_main_process:
            with open(os.path.join(root, run, "logged.json"), "w") as handle:
                json.dump(logged, handle)
        trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:])
