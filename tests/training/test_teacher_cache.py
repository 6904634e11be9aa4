"""The teacher caches: Q/K/V equal the live teacher's, built once, reused; KD logits come from a teacher
with the task's labels and a trained head, run on the accelerator's device, and stay with their examples."""

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from minimoe.data.corpus import build_corpus
from minimoe.data.encode import encode_task, pad_collator
from minimoe.data.tasks import Example, get_task, load_task
from minimoe.distill.teachers import Teacher, load_teacher
from minimoe.errors import MiniMoEError
from minimoe.training import teacher_cache
from minimoe.training.distillation import DistillConfig, StudentConfig
from minimoe.training.distillation import run_distillation as run_distill
from minimoe.training.finetuning import FinetuneConfig
from minimoe.training.finetuning import run_finetuning as run_finetune
from minimoe.training.objectives import TaskObjective
from minimoe.training.teacher_cache import (
    CachedTeacherCorpus,
    build_teacher_cache,
    cache_key,
    cached_collate,
    teacher_logits,
)
from minimoe.training.trainer import TrainConfig

from ..conftest import WORDS


def test_cached_qkv_equal_the_live_teacher(tiny_teacher_dir, tiny_corpus, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    teacher = load_teacher(tiny_teacher_dir)
    corpus = build_corpus(tiny_corpus, tokenizer, 24, cache_root=tmp_path / "c")
    directory = tmp_path / "qkv" / cache_key(str(tiny_teacher_dir), -1, corpus)
    build_teacher_cache(teacher, corpus, pad_collator(tokenizer), -1, directory, batch_size=5)
    stamp = (directory / "qkv.npy").stat().st_mtime_ns
    build_teacher_cache(teacher, corpus, pad_collator(tokenizer), -1, directory)  # reused, not rebuilt
    assert (directory / "qkv.npy").stat().st_mtime_ns == stamp

    cached = CachedTeacherCorpus(corpus, directory)
    batch = cached_collate(pad_collator(tokenizer))([cached[i] for i in range(6)])
    live = teacher.qkv(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    valid = batch["attention_mask"].bool()
    for j in range(3):
        torch.testing.assert_close(batch["teacher_qkv"][:, :, j].float()[valid], live[j][valid], atol=2e-3, rtol=2e-3)
    assert batch["teacher_qkv"][~valid].abs().sum() == 0
    reloaded = pickle.loads(pickle.dumps(cached))  # as a spawned DataLoader worker gets it: no array copied
    assert len(pickle.dumps(cached)) < 2000 and np.array_equal(reloaded[3]["teacher_qkv"], cached[3]["teacher_qkv"])


def test_distillation_from_the_cache_matches_live(tiny_teacher_dir, tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMOE_HOME", str(tmp_path / "home"))

    def first_losses(cache: bool):
        out = tmp_path / f"run-{cache}"
        run_distill(
            DistillConfig(
                teacher=str(tiny_teacher_dir),
                corpus=[str(tiny_corpus)],
                max_length=24,
                relation_heads=4,
                cache_teacher=cache,
                student=StudentConfig(layers=1, hidden=32, heads=4, intermediate=32),
                train=TrainConfig(output_dir=str(out), batch_size=4, max_steps=3, log_every=1, save_every=0, threads=1),
            )
        )
        return [json.loads(line)["train/relation_kl"] for line in (out / "metrics.jsonl").read_text().splitlines()]

    live, cached = first_losses(False), first_losses(True)
    assert len(cached) == 3
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(live), atol=1e-3, rtol=1e-3)
    assert list((tmp_path / "home" / "teacher-qkv").iterdir())


class OnAccelerator(torch.Tensor):
    """A CPU tensor that acts like one on a GPU where it matters: `.numpy()` refuses, `.cpu()` copies out."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")

    def cpu(self, *args, **kwargs):
        return super().cpu(*args, **kwargs).as_subclass(torch.Tensor)


def test_qkv_cache_feeds_the_teacher_on_its_device_and_copies_out_before_numpy(
    tiny_teacher_dir, tiny_corpus, tmp_path, monkeypatch
):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    teacher = load_teacher(tiny_teacher_dir)
    corpus = build_corpus(tiny_corpus, tokenizer, 24, cache_root=tmp_path / "c")
    monkeypatch.setattr(Teacher, "device", property(lambda self: torch.device("meta")))  # "the GPU"
    devices = set()

    def qkv_on_the_device(teacher, input_ids, attention_mask, token_type_ids=None, layer=-1):
        devices.update({input_ids.device, attention_mask.device, token_type_ids.device})
        devices.add((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))  # the run's precision
        B, T = input_ids.shape
        return torch.ones(B, T, 3, teacher.hidden_size, dtype=torch.float16).as_subclass(OnAccelerator)

    monkeypatch.setattr(teacher_cache, "packed_qkv", qkv_on_the_device)
    stand_in = CPUStandIn("meta")
    directory = build_teacher_cache(
        teacher, corpus, pad_collator(tokenizer), -1, tmp_path / "qkv", batch_size=5, autocast=stand_in.autocast
    )
    assert devices == {torch.device("meta"), (True, torch.bfloat16)}
    assert (np.load(directory / "qkv.npy") == 1).all()
    fp32, bf16 = (cache_key(str(tiny_teacher_dir), -1, corpus, p) for p in ("no", "bf16"))
    assert fp32 == cache_key(str(tiny_teacher_dir), -1, corpus) and bf16 != fp32  # bf16 Q/K/V are another cache


def test_left_padding_is_refused(tiny_teacher_dir, tiny_corpus, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir, padding_side="left")
    corpus = build_corpus(tiny_corpus, tokenizer, 24, cache_root=tmp_path / "c")
    with pytest.raises(MiniMoEError, match="needs right padding, but the tokenizer pads on the left"):
        build_teacher_cache(load_teacher(tiny_teacher_dir), corpus, pad_collator(tokenizer), -1, tmp_path / "qkv")


# ---- KD teacher logits ----


class CPUStandIn:
    """The parts of an Accelerator teacher_logits uses, with a chosen device and bf16 autocast."""

    def __init__(self, device: str):
        self.device, self.mixed_precision = torch.device(device), "bf16"

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16)


def seq_cls_teacher(tiny_teacher_dir, path, labels=("0", "1")):
    """A saved sequence classifier (head included) over the tiny teacher's vocabulary, with these labels."""
    config = BertConfig.from_pretrained(tiny_teacher_dir, id2label=dict(enumerate(labels)))
    config.label2id = {label: i for i, label in enumerate(labels)}
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_teacher_dir).save_pretrained(path)
    return path


def encoded(tokenizer, n=10):
    texts = [" ".join(WORDS[i : i + 3 + i % 4]) for i in range(n)]
    return encode_task([Example((t,), i % 2) for i, t in enumerate(texts)], tokenizer, 16)


def test_kd_logits_run_on_the_accelerator_device_in_its_precision(
    tiny_teacher_dir, tmp_path, minimoe_home, monkeypatch
):
    teacher = seq_cls_teacher(tiny_teacher_dir, tmp_path / "t")
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    seen = []
    real_load = teacher_cache.load_pretrained

    def spied_load(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if isinstance(model, BertForSequenceClassification):

            def forward_on_the_device(input_ids, **kwargs):  # records where it runs, answers like a GPU would
                params = {p.device for p in model.parameters()}
                autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
                seen.append((input_ids.device, kwargs["attention_mask"].device, params, autocast))
                return SequenceClassifierOutput(logits=torch.zeros(len(input_ids), 2).as_subclass(OnAccelerator))

            model.forward = forward_on_the_device
        return loaded

    monkeypatch.setattr(teacher_cache, "load_pretrained", spied_load)
    logits = teacher_logits(
        str(teacher), ("0", "1"), encoded(tokenizer), pad_collator(tokenizer), 4, CPUStandIn("meta")
    )
    assert logits.shape == (10, 2) and type(logits) is torch.Tensor
    meta = torch.device("meta")
    assert seen and all(s == (meta, meta, {meta}, (True, torch.bfloat16)) for s in seen)


def test_kd_teacher_must_have_the_tasks_labels_and_a_trained_head(tiny_teacher_dir, tmp_path, minimoe_home):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    data, collate = encoded(tokenizer), pad_collator(tokenizer)

    def logits_of(teacher):
        return teacher_logits(str(teacher), ("0", "1"), data, collate, 4, CPUStandIn("cpu"))

    with pytest.raises(MiniMoEError, match=r"predicts \['LABEL_0', 'LABEL_1'\].*needs labels \['0', '1'\]"):
        logits_of(tiny_teacher_dir)  # a base encoder: transformers' default label names
    with pytest.raises(MiniMoEError, match=r"predicts \['1', '0'\]"):
        logits_of(seq_cls_teacher(tiny_teacher_dir, tmp_path / "swapped", labels=("1", "0")))
    no_head = tmp_path / "no-head"  # the right labels in config.json, but the head was never trained or saved
    shutil.copytree(tiny_teacher_dir, no_head)
    config = json.loads((no_head / "config.json").read_text())
    (no_head / "config.json").write_text(json.dumps(config | {"id2label": {"0": "0", "1": "1"}}))
    with pytest.raises(MiniMoEError, match="no fine-tuned classification head .*classifier.weight"):
        logits_of(no_head)
    assert logits_of(seq_cls_teacher(tiny_teacher_dir, tmp_path / "good")).shape == (10, 2)


def test_cached_kd_logits_stay_with_their_examples_when_batches_are_shuffled(
    tiny_teacher_dir, tmp_path, minimoe_home, monkeypatch
):
    teacher = seq_cls_teacher(tiny_teacher_dir, tmp_path / "t", labels=("negative", "positive"))  # sst2's names
    rows = ["sentence\tlabel"] + [f"{' '.join(WORDS[i : i + 2 + i % 5])}\t{i % 2}" for i in range(20)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    seen = []
    real_forward = TaskObjective.forward

    def spy(self, labels, teacher_logits=None, **inputs):
        seen.append((inputs["input_ids"], inputs["attention_mask"], teacher_logits))
        return real_forward(self, labels, teacher_logits, **inputs)

    monkeypatch.setattr(TaskObjective, "forward", spy)
    train = TrainConfig(output_dir=str(tmp_path / "s"), batch_size=4, epochs=1, save_every=0, threads=1, seed=5)
    run_finetune(
        FinetuneConfig(model=str(teacher), teacher=str(teacher), task="sst2", data_dir=str(tmp_path), train=train)
    )

    model = BertForSequenceClassification.from_pretrained(teacher).eval()
    train_batches = [s for s in seen if s[2] is not None]
    first_ids = [int(ids[i, 1]) for ids, _, _ in train_batches for i in range(len(ids))]
    in_file_order = encode_task(load_task(get_task("sst2"), tmp_path, "train"), AutoTokenizer.from_pretrained(teacher))
    encoded_order = [int(f["input_ids"][1]) for f in in_file_order.features]
    assert len(first_ids) == 20 and first_ids != encoded_order  # really shuffled
    for ids, mask, cached in train_batches:
        with torch.no_grad():
            torch.testing.assert_close(cached, model(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)
