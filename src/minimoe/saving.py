"""A saved model directory: weights, tokenizer, the remote code that loads it with stock transformers, and its card."""

from __future__ import annotations

from pathlib import Path

from minimoe.card import CardInfo, write_card
from minimoe.files import atomic_directory
from minimoe.modeling.portable import write_remote_code


def save_model(model, tokenizer, path: str | Path, card: CardInfo | None = None) -> Path:
    """A complete model directory at `path`, atomically: weights, tokenizer, model card (README.md) and, for
    MiniMoE models, the remote code that loads it with stock transformers. `card` is what the job knows,
    its measured cost rows included (nothing is measured here).
    """
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if model.config.model_type == "minimoe":
            write_remote_code(tmp)
        write_card(tmp, model, card or CardInfo(), directory_name=str(path))
    return Path(path)
