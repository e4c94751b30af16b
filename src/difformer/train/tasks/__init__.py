"""The task kinds a :class:`~difformer.data.DatasetSpec` may name (``kind``): one class each
(:class:`.base.Task` says what a kind defines), registered here by one line each."""

from __future__ import annotations

from .base import Task
from .graph import GraphTask
from .node import NodeTask
from .temporal import TemporalTask

TASKS: dict[str, type[Task]] = {
    task.kind: task
    for task in (
        NodeTask,
        TemporalTask,
        GraphTask,
    )
}
