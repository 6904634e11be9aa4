"""Data: task readers and metrics, tokenisation, and the task-agnostic segment-pair corpus."""

from minimoe.data.corpus import PairCorpus, build_corpus, load_corpus
from minimoe.data.encode import TaskDataset, encode_task, pad_collator
from minimoe.data.metrics import METRICS, compute_metrics
from minimoe.data.sources import open_source, read_documents
from minimoe.data.tasks import GLUE_TASKS, TASKS, Example, TaskSpec, custom_task, get_task, load_hf_task, load_task

__all__ = [
    "GLUE_TASKS",
    "METRICS",
    "TASKS",
    "Example",
    "PairCorpus",
    "TaskDataset",
    "TaskSpec",
    "build_corpus",
    "compute_metrics",
    "custom_task",
    "encode_task",
    "get_task",
    "load_corpus",
    "load_hf_task",
    "load_task",
    "open_source",
    "pad_collator",
    "read_documents",
]
