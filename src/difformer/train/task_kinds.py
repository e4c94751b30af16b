"""The task kinds a :class:`~difformer.data.DatasetSpec` may name (``kind``), and their classes."""
from __future__ import annotations

from .graph_task import GraphTask
from .tasks import NodeTask, TemporalTask

TASKS = {task.kind: task for task in (NodeTask, TemporalTask, GraphTask)}
