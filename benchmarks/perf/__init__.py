"""The sections of the minimoe performance suite, one module each; `benchmarks/run.py` runs them in order."""
