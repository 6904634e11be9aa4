"""The teacher Q/K/V cache: same relation targets as the live teacher, built once, reused."""

import json

import torch
from transformers import AutoTokenizer

from minimoe.data.corpus import build_corpus
from minimoe.data.encode import pad_collator
from minimoe.distill.teacher_cache import CachedTeacherCorpus, build_teacher_cache, cache_key, cached_collate
from minimoe.distill.teachers import load_teacher
from minimoe.distill.trainer import TrainConfig
from minimoe.jobs.distill import DistillConfig, StudentConfig
from minimoe.jobs.distill import run as run_distill


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
