"""How many tokens a job may give a model: the model's limit, and a job's max_length fitted to it.

A longer sequence than the position table holds fails deep inside the embedding lookup, often after
minutes of work, so every job fits `max_length` to the model before it tokenises anything (and then
truncates every input to it): a `--max_length` above the limit is one usage error naming both numbers,
while the default (128) is lowered to the limit of a model that takes fewer, with a one-line notice.
"""

from __future__ import annotations

import dataclasses
import sys

from transformers import PretrainedConfig, PreTrainedTokenizerBase

from minimoe.errors import MiniMoEError
from minimoe.modeling.config import position_limit

# transformers' model_max_length when the tokenizer declares none (VERY_LARGE_INTEGER); anything below is real.
_NO_TOKENIZER_LIMIT = 10**12


def token_limit(*configs: PretrainedConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> int | None:
    """The most tokens every one of these models takes: their position limits, and the tokenizer's
    model_max_length when it declares one (that also covers families whose position offset `position_limit`
    does not know); None = no limit known.
    """
    limits = [position_limit(config) for config in configs]
    declared = getattr(tokenizer, "model_max_length", None)
    if declared and declared < _NO_TOKENIZER_LIMIT:
        limits.append(int(declared))
    known = [limit for limit in limits if limit]
    return min(known) if known else None


def fit_max_length(cfg, limit: int | None, model: str) -> int:
    """`cfg.max_length` if the model takes it; the field's default lowered to `limit` with a notice on stderr;
    otherwise one usage error naming both numbers.
    """
    if limit is None or cfg.max_length <= limit:
        return cfg.max_length
    default = next(f.default for f in dataclasses.fields(cfg) if f.name == "max_length")
    if cfg.max_length == default:
        print(
            f"minimoe: max_length {default} (the default) is more than the {limit} tokens {model} takes; using {limit}",
            file=sys.stderr,
        )
        return limit
    raise MiniMoEError(
        f"--max_length {cfg.max_length} is more than the {limit} tokens {model} takes (its position limit): "
        f"pass --max_length {limit} or less"
    )
