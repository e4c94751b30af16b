"""``mode=train``: data -> task -> run loop -> summary, for every task kind.

:func:`train` never looks at a dataset's or a model's name: the dataset's spec names its task
kind (:data:`~difformer.train.tasks.TASKS`), the model declares what it needs
(``requires_graph``, ``knn_k``, ``inference``, ``level``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import __version__
from ..config.core import CONFIG_DIR, ConfigError
from ..config.settings import Settings
from ..data import DataRoot, get_spec, load_dataset, prepare_for_model, registry_name
from ..models import MODELS, model_class
from ..runs import rundir
from ..runs.files import write_json
from ..train import distributed
from ..train.common import resolve_device
from ..train.loggers import NullLogger, RunLogger
from ..train.loop import RunLoop
from ..train.parallel_runs import Workers, balanced_workers
from ..train.tasks import TASKS


def task_of(settings: Settings):
    """The dataset's spec and its task class, from the registry (no data is read)."""
    spec = get_spec(registry_name(settings.dataset))
    return spec, TASKS[spec.kind]


def load_data(settings: Settings, probe):
    """The dataset, with the data the model asks for."""
    root = DataRoot.from_config(settings.paths)
    with distributed.rank_zero_first():
        dataset, spec = load_dataset(settings.dataset, root)
    dataset = prepare_for_model(dataset, probe, root.cache_dir)
    if getattr(probe, "requires_graph", False) and not getattr(dataset, "has_graph", True):
        raise ConfigError(
            f"model {settings.model_name} uses the input graph, but dataset "
            f"{spec.name} has none: set dataset.knn_k=5 for a k-NN graph (or, "
            "for DIFFormer, model.use_graph=false)"
        )
    return dataset, spec


def graph_level_models() -> list[str]:
    """The model configs (``configs/model/*.yaml``) whose class predicts graphs."""
    import yaml

    names = []
    for path in sorted((CONFIG_DIR / "model").glob("*.yaml")):
        name = (yaml.safe_load(path.read_text()) or {}).get("name")
        if name in MODELS and getattr(model_class(name), "level", "node") == "graph":
            names.append(path.stem)
    return names


def check_trainer(settings: Settings, probe) -> None:
    """The model, trainer and launch fit the dataset's task kind (before any write)."""
    spec, task_cls = task_of(settings)
    trainer = settings.trainer
    level = getattr(probe, "level", "node")
    if task_cls.level != level:
        raise ConfigError(
            f"model {settings.model_name} predicts {level}s, but dataset {spec.name} is "
            + (
                f"graph-level: use a graph-level model ({', '.join(graph_level_models())})"
                if task_cls.level == "graph"
                else f"a {task_cls.kind} task: use a node-level model"
            )
        )
    if trainer.name not in task_cls.trainers:
        raise ConfigError(
            f"dataset {spec.name} needs trainer={' or '.join(task_cls.trainers)}, "
            f"got trainer={trainer.name}"
        )
    if trainer.eval_chunk is not None and not hasattr(probe, "inference"):
        raise ConfigError(
            f"trainer.eval_chunk needs a model with streamed inference (difformer); "
            f"model {settings.model_name} has none: set trainer.eval_chunk=null"
        )
    if distributed.world_size() > 1 and not task_cls.supports_torchrun(trainer):
        raise ConfigError(
            f"torchrun is supported for node classification with "
            f"trainer=minibatch, not for the {task_cls.kind} task with "
            f"trainer={trainer.name}"
        )
    check_parallel_runs(trainer)


def check_parallel_runs(trainer) -> None:
    k = trainer.parallel_runs
    if k in (1, "auto"):  # auto is one process wherever several cannot be used
        return
    if distributed.world_size() > 1:
        raise ConfigError(
            f"trainer.parallel_runs={k} starts its own processes; under torchrun "
            "set trainer.parallel_runs=1"
        )
    device = resolve_device(trainer.device)
    if device.type != "cpu":
        raise ConfigError(
            f"trainer.parallel_runs={k} spreads runs over CPU cores; on "
            f"{device.type} one process drives the device: set "
            "trainer.parallel_runs=1 (or trainer.device=cpu)"
        )


def parallel_workers(trainer, device) -> int:
    """trainer.parallel_runs as a number of worker processes; ``auto``: balanced over this
    process's threads on a CPU (:func:`~difformer.train.parallel_runs.balanced_workers`), else
    one."""
    if trainer.parallel_runs != "auto":
        return trainer.parallel_runs
    if device.type != "cpu" or distributed.world_size() > 1:
        return 1
    return balanced_workers(trainer.runs, torch.get_num_threads())


def train(settings: Settings, probe, run_dir: Path, trial=None) -> dict:
    """``trial``: an Optuna trial reporter (:mod:`difformer.sweeps.trial`) when a sweeper
    started this job; it sees every evaluated epoch and may stop the job (pruned)."""
    start = time.time()
    trainer = settings.trainer
    spec, task_cls = task_of(settings)
    device = distributed.setup(resolve_device(trainer.device))
    finished = False
    workers = None
    try:
        lead = distributed.rank() == 0
        # a pruned study judges each epoch as it ends: its trials train their runs in turn
        parallel = 1 if trial is not None and trial.prunes else parallel_workers(trainer, device)
        if lead and parallel > 1:
            # started before this process loads the data: their start-up overlaps ours
            workers = Workers(
                settings.config, run_dir, trainer.runs, parallel, torch.get_num_threads()
            )
        dataset, spec = load_data(settings, probe)  # the file may decide the loss
        eval_device = None if trainer.eval_device is None else resolve_device(trainer.eval_device)
        task = task_cls(
            dataset,
            spec,
            settings,
            device,
            eval_device,
            distributed.rank(),
            distributed.world_size(),
        )
        worker = trainer.run_ids is not None  # a parallel worker: its parent says these
        if lead and not worker:
            print(dataset.summary(), flush=True)
        logger = RunLogger(run_dir, settings.logger, settings.config) if lead else NullLogger()
        if trial is not None and lead:
            logger = trial.wrap(logger)
        try:
            if workers is not None:
                workers.finish(logger)
                workers = None
            loop = RunLoop(task, settings, run_dir, logger, device, dataset.fingerprint())
            records, _ = loop.fit()
            finished = True
            if not lead:
                return {}
            summary = {
                "dataset": dataset.name,
                "model": settings.model_name,
                "task": task.kind,
                **task.summary(records),
                "std_ddof": 1,
                "n_runs": len(records),
                "runs": records,
                "device": str(device),
                "world_size": distributed.world_size(),
                "torch_threads": torch.get_num_threads(),
                "wall_seconds": time.time() - start,
                "package_version": __version__,
                "config_hash": settings.config_hash,
                "run_dir": str(run_dir),
            }
            write_json(Path(run_dir) / rundir.SUMMARY, summary)
            logger.finish(summary)
        finally:
            logger.close()
    except BaseException:
        if workers is not None:  # this process failed while its workers were training
            workers.abort()
        raise
    finally:
        distributed.teardown(finished)
    if trainer.run_ids is None:
        print(
            f"{task.report(summary)} (sample std, ddof=1) | {summary['wall_seconds']:.1f}s | "
            f"{run_dir}",
            flush=True,
        )
    return summary
