"""Statistics over seeds: paired differences, ablations, relation KL at step marks, the final train loss."""

import json

import pytest

from minimoe.studies.statistics import ablation_differences, final_train_loss, kl_at_marks, paired_differences


def test_paired_differences_are_per_seed():
    def kind(experts, scores):
        per_seed = {s: {"a": v, "average": v, "distill KL": 0.2, "train loss": v / 100} for s, v in scores.items()}
        return {"teacher": "t", "variant": "", "size": "1L-32H", "experts": experts, "per_seed": per_seed}

    (row,) = paired_differences([kind(1, {1: 60.0, 2: 70.0, 3: 65.0}), kind(4, {1: 61.0, 2: 73.0})], ["a"])
    assert row["average diff"] == 2.0 and row["average diff sd"] == pytest.approx(1.41421, rel=1e-4)
    assert row["seeds"] == 2 and row["average diffs"] == "+1.00 +3.00" and row["distill KL diff"] == 0.0
    assert row["train loss diff"] == pytest.approx(0.02)


def test_ablations_are_against_the_base_student_with_the_same_experts():
    def kind(variant, tag, experts, scores):
        per_seed = {s: {"a": v, "average": v, "distill KL": 0.2, "train loss": 0.4} for s, v in scores.items()}
        return {"teacher": "t", "variant": variant, "size": "1L-32H", "experts": experts, "tag": tag} | {
            "per_seed": per_seed
        }

    runs = [
        kind("", "", 1, {1: 60.0, 2: 70.0}),
        kind("", "", 4, {1: 62.0, 2: 71.0}),
        kind("nonoise", "", 1, {1: 60.0, 2: 70.0}),  # the base dense student, shared: no row
        kind("nonoise", "-nonoise", 4, {1: 63.0, 2: 74.0}),
        kind("own", "-own", 1, {1: 59.0, 2: 69.0}),
    ]
    nonoise, own = ablation_differences(runs, ["a"])
    assert (nonoise["variant"], nonoise["student"], own["variant"], own["student"]) == (
        "nonoise",
        "E=4",
        "own",
        "dense",
    )
    assert nonoise["average diff"] == 2.0 and nonoise["average diffs"] == "+1.00 +3.00" and own["a diff"] == -1.0
    assert own["average diff sd"] == 0.0 and own["distill KL diff"] == 0.0 and own["seeds"] == 2


def test_kl_at_marks_averages_a_window_before_each_mark_then_the_seeds():
    steps = list(range(10, 1510, 10))  # logged every 10 steps, as the trainer does
    low, high = [(s, 0.1) for s in steps], [(s, 0.3 if s % 250 else 9.0) for s in steps]  # a spike at each mark
    marks = kl_at_marks([low, high], 1500)
    assert list(marks) == [250, 500, 750, 1000, 1250, 1500]
    assert marks[250] == pytest.approx((0.1 + (0.3 * 9 + 9.0) / 10) / 2)  # 10 logged values in (150, 250]
    assert list(kl_at_marks([[(1, 0.5), (2, 0.4)]], 2)) == [1, 2]  # fewer steps than marks: one per step
    assert kl_at_marks([[]], 60)[60] != kl_at_marks([[]], 60)[60]  # nothing logged: nan
    short = kl_at_marks([[(s, s / 100) for s in (10, 20, 30, 40)]], 40)  # the quick demo: 40 steps, 4 logged
    assert short == pytest.approx({10: 0.1, 20: 0.2, 30: 0.3, 40: 0.4})  # a mark per logged step, none empty
    assert all(v == v for v in kl_at_marks([[(s, 0.2) for s in range(10, 110, 10)]], 100).values())  # no nan


def test_final_train_loss_is_the_mean_task_loss_of_the_last_tenth(tmp_path):
    records = [{"step": i, "train/loss": 9.0, "train/task_loss": float(i)} for i in range(1, 21)]
    records.insert(5, {"step": 5, "eval/accuracy": 0.5})  # eval records carry no training loss
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert final_train_loss(tmp_path) == 19.5  # the last 2 of 20 logged losses, not train/loss
    assert final_train_loss(tmp_path / "absent") != final_train_loss(tmp_path / "absent")  # nan
