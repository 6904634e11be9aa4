"""Run by test_ddp.py under `accelerate launch`: a short deterministic distillation, final weights saved."""

import sys

import torch
from torch.utils.data import TensorDataset

from minimoe.distill.objectives import RelationDistillation
from minimoe.distill.teachers import load_teacher
from minimoe.distill.trainer import TrainConfig, Trainer
from minimoe.jobs.distill import StudentConfig, build_student


def collate(rows):
    ids = torch.stack([r[0] for r in rows])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def main(teacher_dir: str, out: str, batch_size: int) -> None:
    teacher = load_teacher(teacher_dir)
    shape = StudentConfig(
        layers=2,
        hidden=32,
        heads=4,
        experts=4,
        intermediate=32,
        router_noise=0.0,
        dropout=0.0,
        router_aux_loss_coef=0.0,
    )  # the balance loss is per process (as in Switch)
    objective = RelationDistillation(build_student(teacher, shape, seed=0), teacher, 4, -1, "head")
    ids = torch.randint(5, 60, (64, 10), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(
        output_dir=out,
        batch_size=batch_size,
        lr=1e-3,
        max_steps=6,
        warmup_ratio=0.0,
        log_every=1,
        save_every=0,
        threads=1,
    )
    initial = {k: v.clone() for k, v in objective.student.state_dict().items()}
    trainer = Trainer(cfg, objective, TensorDataset(ids), collate)
    trainer.train()
    if trainer.accelerator.is_main_process:
        torch.save(initial, f"{out}/initial.pt")
        torch.save(trainer.accelerator.unwrap_model(trainer.model).student.state_dict(), f"{out}/student.pt")
        print(f"world_size={trainer.accelerator.num_processes} backend={trainer.accelerator.distributed_type}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
