"""Model cards: the README.md (YAML front matter + sections) written into every saved model directory.

It says what the model is (architecture, parameters, active parameters, FLOPs, latency on the saving
machine), where it comes from (teacher, data, recipe), how well it does (dev scores) and how to load it
with and without minimoe, as sentence-transformers and the Hugging Face hub cards do.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData

from minimoe.flops import count_flops, count_parameters
from minimoe.latency import measure_latency
from minimoe.modeling.config import position_limit
from minimoe.report import markdown_rows, si_count

CARD_FILE = "README.md"


@dataclass
class CardInfo:
    """What a job knows about the model it saves; everything else on the card is measured from the model."""

    teacher: str = ""  # the model distilled from (the card's base_model)
    datasets: list[str] = field(default_factory=list)  # corpora or task names trained on
    task: str = ""  # the task fine-tuned on, if any
    scores: dict[str, float] = field(default_factory=dict)  # dev metrics
    recipe: str = ""  # the job's recipe as YAML
    how: str = ""  # one sentence on how the model was made
    cost: list[list] = field(default_factory=list)  # measure_cost(model) rows, measured once by the job that saves


def read_card_meta(directory: str | Path) -> dict:
    """The YAML front matter of a saved model's card ({} when there is none): provenance for derived models."""
    path = Path(directory) / CARD_FILE
    return ModelCard.load(path).data.to_dict() if path.is_file() else {}


def _architecture(model) -> list[list]:
    c = model.config
    rows = [["type", c.model_type], ["layers", c.num_hidden_layers], ["hidden size", c.hidden_size]]
    rows += [["attention heads", c.num_attention_heads]]
    if c.model_type == "minimoe":
        rows += [["experts per FFN (top-1)", c.num_experts], ["expert width", c.intermediate_size]]
    else:
        rows += [["FFN width", c.intermediate_size]]
    rows += [["vocabulary", c.vocab_size]]
    if getattr(c, "num_labels", 0) and hasattr(model, "classifier"):
        rows += [["labels", ", ".join(c.id2label[i] for i in range(c.num_labels))]]
    return rows


def measure_cost(model) -> list[list]:
    """The card's cost rows: parameters, active parameters, FLOPs and batch-1 latency at up to 128 tokens."""
    T = min(128, position_limit(model.config) or 128)  # the paper's length, if the model takes it
    params = count_parameters(model)
    flops = count_flops(model, 1, T)
    latency = measure_latency(model, batch_size=1, seq_len=T, repeats=3, warmup=1)
    where = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    return [
        ["parameters", si_count(params.total, 2)],
        ["active parameters per token", si_count(params.active, 2)],
        [f"FLOPs per sequence of {T} tokens", f"{flops.gflops_per_sequence:.4f} G"],
        [f"latency, batch 1 x {T} ({where})", f"{latency:.1f} ms"],
    ]


def _loading(directory_name: str, classifier: bool) -> str:
    auto = "AutoModelForSequenceClassification" if classifier else "AutoModel"
    text = f"""With minimoe installed (`pip install minimoe`):

```python
import minimoe  # registers the model with the Auto classes
from transformers import {auto}, AutoTokenizer

model = {auto}.from_pretrained("{directory_name}")
tokenizer = AutoTokenizer.from_pretrained("{directory_name}")
```

With transformers alone (the model code is saved beside the weights):

```python
from transformers import {auto}

model = {auto}.from_pretrained("{directory_name}", trust_remote_code=True)
```
"""
    if classifier:
        text += f"""
```python
from transformers import pipeline

classify = pipeline("text-classification", model="{directory_name}", trust_remote_code=True)
classify("a gripping, beautifully acted film")
```

Or from the command line: `minimoe predict --model {directory_name} --input texts.txt` and
`minimoe evaluate --model {directory_name} --task TASK`.
"""
    return text


def model_card(model, info: CardInfo, directory_name: str = "path/to/model") -> str:
    """The card's text for a model (a MiniMoE student or any HF encoder) and what its job knows."""
    minimoe_model = model.config.model_type == "minimoe"
    classifier = hasattr(model, "classifier")
    tags = ["minimoe"] + (["mixture-of-experts"] if getattr(model.config, "num_experts", 1) > 1 else [])
    tags += ["distillation"] if minimoe_model else []
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification" if classifier else "feature-extraction",
        "base_model": info.teacher or None,
        "datasets": info.datasets or None,
        "metrics": [k for k in info.scores if k != "score" and "_" not in k] or None,
        "tags": tags,
    }
    front = ModelCardData(**{k: v for k, v in meta.items() if v is not None}).to_yaml()
    title = Path(directory_name).name or "model"
    kind = "MiniMoE student (a BERT whose FFNs are mixtures of minimal experts)" if minimoe_model else "encoder"
    parts = [
        f"---\n{front}\n---\n",
        f"# {title}\n",
        f"A {kind} {info.how or 'saved by minimoe'}.\n",
        "## Architecture\n",
        markdown_rows(["", ""], _architecture(model)) + "\n",
        *(["## Cost\n", markdown_rows(["", ""], info.cost) + "\n"] if info.cost else []),
        "## Training\n",
        markdown_rows(
            ["", ""],
            [["teacher", info.teacher or "-"], ["data", ", ".join(info.datasets) or "-"], ["task", info.task or "-"]],
        )
        + "\n",
    ]
    if info.scores:
        parts += [
            "## Dev scores\n",
            markdown_rows(["metric", "value"], [[k, f"{v:.4f}"] for k, v in info.scores.items()]),
        ]
        parts[-1] += "\n"
    if info.recipe:
        parts += ["## Recipe\n", f"```yaml\n{info.recipe.strip()}\n```\n"]
    parts += ["## How to load\n", _loading(directory_name, classifier)]
    return "\n".join(parts)


def write_card(directory: str | Path, model, info: CardInfo, directory_name: str = "") -> Path:
    """Write README.md (the model card) into a saved model directory."""
    path = Path(directory) / CARD_FILE
    ModelCard(model_card(model, info, directory_name or str(directory))).save(path)
    return path
