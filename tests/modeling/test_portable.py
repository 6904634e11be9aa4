"""Saved MiniMoE models load with stock transformers where minimoe cannot be imported (remote code)."""

import ast
import json
import os
import subprocess
import sys

import torch

from minimoe import MiniMoEForSequenceClassification
from minimoe.card import CardInfo
from minimoe.modeling.portable import AUTO_MAP, portable_sources
from minimoe.saving import save_model

# Run where `import minimoe` fails: src off the path and the package blocked in sys.modules.
NO_MINIMOE = """
import json, sys
sys.modules["minimoe"] = None
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, pipeline
path = sys.argv[1]
model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
ids = torch.tensor(json.loads(sys.argv[2]))
logits = model(ids).logits.tolist()
base = AutoModel.from_pretrained(path, trust_remote_code=True)
classify = pipeline("text-classification", model=path, trust_remote_code=True)
print(json.dumps({"logits": logits, "base": type(base).__name__, "pipeline": classify(["the cat sat", "a red dog"])}))
"""


def test_generated_files_are_self_contained():
    for name, source in portable_sources().items():
        tree = ast.parse(source)  # valid Python
        imported = [
            n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names
        ]
        assert not [m for m in imported if m and m.split(".")[0] == "minimoe"], name
        assert "class MiniMoEError" in source or "from .configuration_minimoe import" in source


def test_saved_model_loads_without_minimoe(tiny_config, bert_tokenizer, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = MiniMoEForSequenceClassification(config).eval()
    path = save_model(model, bert_tokenizer, tmp_path / "student", CardInfo(task="movie-sentiment"))
    assert json.loads((path / "config.json").read_text())["auto_map"] == AUTO_MAP
    assert (path / "README.md").is_file() and (path / "modeling_minimoe.py").is_file()

    ids = [[2, 7, 9, 11, 3], [2, 5, 8, 3, 0]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", NO_MINIMOE, str(path), json.dumps(ids)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits
    assert torch.allclose(torch.tensor(out["logits"]), expected, atol=1e-5)
    assert out["base"] == "MiniMoEModel"
    assert [p["label"] in ("negative", "positive") for p in out["pipeline"]] == [True, True]
