"""The committed device check (tools/bench-gpu.sh) runs end to end on the CPU with a tiny trial and
writes its figures and summary, importing nothing a bare GPU image lacks beyond its wheels."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, tiny_trial

# a bare GPU image has torch, transformers, tokenizers, safetensors, numpy, pyyaml and rich; the check
# installs DeepSpeed, pydantic and hjson from its wheels; nothing else of ours may be needed
BARE_IMAGE_LACKS = ["ray", "quadprog", "pandas", "matplotlib", "rouge_metric", "nltk", "peft", "tensorboard",
                    "tensorboardX", "ninja", "mlflow", "wandb"]


@pytest.mark.slow
def test_the_device_check_runs_on_a_tiny_trial(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps(tiny_trial(tasks=["synth.nlg", "synth.sentiment"], method="word_kd")))
    # a sitecustomize that makes the packages a bare GPU image lacks unimportable
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import importlib.abc, importlib.machinery, sys\n"
        "class _Missing(importlib.abc.Loader):\n"
        "    def create_module(self, spec):\n"
        "        raise ModuleNotFoundError(f'{spec.name}: not on a bare GPU image', name=spec.name)\n"
        "    def exec_module(self, module):\n"
        "        pass\n"
        "class _Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {BARE_IMAGE_LACKS!r}:\n"
        "            return importlib.machinery.ModuleSpec(name, _Missing())\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = dict(os.environ, OUT=str(tmp_path / "out"), CONFIG=str(cfg), STEPS="2", DEADLINE_S="1200", STEP_S="400", EXTRA_TRAIN="0", PACKING="2",
               PYTHON=sys.executable, PYTHONPATH=f"{block}:{REPO}", OMP_NUM_THREADS="1")
    res = subprocess.run(["bash", str(REPO / "tools" / "bench-gpu.sh")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("decode", "decode-eager", "train", "train-paper-graph"):
        assert (out / f"{name}.json").is_file(), (out / "check.log").read_text()[-3000:]
    decode = json.loads((out / "decode.json").read_text())
    assert decode["decoding"]["forward_calls"] > 0 and decode["decoding"]["profile"]
    train = json.loads((out / "train.json").read_text())
    assert train["train"]["fast"]["tokens_per_s"] > 0
    log = (out / "check.log").read_text()
    graph = json.loads((out / "train-paper-graph.json").read_text())
    assert graph["train"]["fast, paper, graph"]["step_ms"] > 0 and graph["packing_paper"]["trials"] == 2
    assert re.findall(r"=== rc (\d+)", log) == ["0", "0", "0", "0"], log[-3000:]
    assert "train: " in log and "decoding " in log  # the summary lines
