"""Studies: grids of distillation and fine-tuning runs over teachers, student sizes, experts and seeds.

config (the recipe: axes, the job configs as sections, variants), grid (the stages, run and gathered),
statistics (what is read from the stages and compared over seeds), results (study.md, study.json, plots).
"""
