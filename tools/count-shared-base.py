"""What a LoRA Word-KD teacher saves by sharing the student's frozen base, counted (no training).

For each shape: a LoRA student and a LoRA teacher built from the same config and seed (as a trial and
its teacher are), the bytes of the distinct storages their parameters live in, before and after
l2kd.lora.share_frozen_base, in fp32 on the CPU; and the saving under bf16 autocast, where an
unshared GPT-2 teacher would hold its blocks' Conv1D weights as stored bf16 casts (TargetLogits.frozen;
other architectures store none). The tiny shapes use the builtin BPE; GPT-2 small and SmolLM2-135M's
shape use the tokenizer given (GPT-2's BPE: GPT-2's 50,257 words). The figures go to
docs/performance.md.

Usage: OMP_NUM_THREADS=1 python tools/count-shared-base.py GPT2_TOKENIZER_FOLDER
Prints a Markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers.pytorch_utils import Conv1D  # noqa: E402

from l2kd import lora  # noqa: E402
from l2kd.config import ModelConfig  # noqa: E402
from l2kd.model import build_model  # noqa: E402
from l2kd.tokenizer import Tokenizer  # noqa: E402

TINY_LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 96}
DEMO_LLAMA = {"model_type": "llama", "hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}
SMOLLM2_135M = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 2048,
                "tie_word_embeddings": True}


def unique_bytes(*models) -> int:
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for m in models for p in m.parameters()}
    return sum(storages.values())


def main(tokenizer: str) -> None:
    shapes = [("tiny GPT-2 (the tests': 1 x 32)", {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 96},
               "builtin"),
              ("tiny Llama (the tests': 1 x 32, GQA)", TINY_LLAMA, "builtin"),
              ("the demo grid's Llama (2 x 96, GQA)", DEMO_LLAMA, "builtin"),
              ("GPT-2 small (12 x 768)", "small", tokenizer),
              ("SmolLM2-135M's shape (30 x 576, GQA 9/3, tied)", SMOLLM2_135M, tokenizer)]
    print("| shape | vocabulary | student + teacher, bytes | with sharing | saved | saved under bf16 autocast "
          "| the teacher's own embeddings, bytes |")
    print("|---|---|---|---|---|---|---|")
    for label, shape, tok_name in shapes:
        tok = Tokenizer.load(tok_name)
        for task in ("synth.nlg", "synth.sentiment"):
            tok.add_task(task)
        cfg = ModelConfig(config=shape, lora={"r": 8})  # peft's default targets for the architecture
        student, teacher = build_model(cfg, tok, 1), build_model(cfg, tok, 1)
        before = unique_bytes(student, teacher)
        shared = lora.share_frozen_base(teacher, student)
        saved = before - unique_bytes(student, teacher)
        cast = {id(p) for m in teacher.modules() if isinstance(m, Conv1D) for p in m.parameters()}
        saved_bf16 = sum(p.numel() * (2 if id(p) in cast else p.element_size()) for p in shared)
        own = sum(w.numel() * w.element_size() for w in (teacher.get_input_embeddings().weight,
                                                         lora.untied_output_weight(teacher)) if w is not None)
        print(f"| {label} | {len(tok):,} | {before:,} | {before - saved:,} | {saved:,} "
              f"({saved / 2**20:.1f} MiB, {100 * saved / before:.0f} %) | {saved_bf16:,} ({saved_bf16 / 2**20:.1f} MiB) "
              f"| {own:,} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
