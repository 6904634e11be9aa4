"""Data for distillation: packaged assets (fetch), task readers, metrics, and the task-agnostic pair corpus."""

from minimoe.data.corpus import PairCorpus, build_corpus, read_documents
from minimoe.data.encode import TaskDataset, encode_task, pad_collator
from minimoe.data.fetch import (
    ASSETS,
    CORPORA,
    PACKAGED_TASKS,
    TEACHER_NAME,
    cache_dir,
    fetch_all,
    fetch_corpus,
    fetch_task,
    fetch_teacher,
)
from minimoe.data.metrics import METRICS, compute_metrics
from minimoe.data.tasks import GLUE_TASKS, TASKS, Example, TaskSpec, custom_task, get_task, load_hf_task, load_task

__all__ = [
    "ASSETS",
    "CORPORA",
    "GLUE_TASKS",
    "METRICS",
    "PACKAGED_TASKS",
    "TASKS",
    "TEACHER_NAME",
    "Example",
    "PairCorpus",
    "TaskDataset",
    "TaskSpec",
    "build_corpus",
    "cache_dir",
    "compute_metrics",
    "custom_task",
    "encode_task",
    "fetch_all",
    "fetch_corpus",
    "fetch_task",
    "fetch_teacher",
    "get_task",
    "load_hf_task",
    "load_task",
    "pad_collator",
    "read_documents",
]
