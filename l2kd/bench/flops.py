"""Model FLOPs of a training step, and the peak a device could do: the two halves of MFU.

MFU = model FLOPs achieved per second / the device's peak. Model FLOPs count the work the model
needs, not what an implementation spends (PaLM, Chowdhery et al. 2022, appendix B): per trained
row of T tokens, forward + backward,

    6 · N_blocks · T          the transformer blocks' weights (N_blocks: their parameter count)
  + 12 · n_layer · n_embd · T²  attention scores and values (PaLM's convention: not halved for causal)
  + 6 · n_embd · V · targets  the LM head, only at positions a loss reads (answer + EOS of QA rows,
                              every real position of LM rows)

Embedding lookups are free. A path that runs the head at every position (the reference did) spends
more than this and so shows a lower MFU for the same rows: that is the point of the measure.
"""

from __future__ import annotations

import re

import torch

# Dense peak TFLOP/s (no sparsity) by device name fragment, for the precision a step runs in. Data
# sheets: NVIDIA H100/H200 SXM (bf16 989.4, fp32 66.9), H100 PCIe (756 / 51.2), H100 NVL (835.5 /
# 60), A100 (312 / 19.5), L40S (362 / 91.6), L4 (121 / 30.3), A10 (125 / 31.2), V100 (fp16 125 /
# 15.7), T4 (fp16 65 / 8.1). fp32 means plain fp32 matmuls (PyTorch's default; TF32 is off unless a
# user turns it on).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 51.2},  # before "H100": the first match counts
    "H100 NVL": {"bf16": 835.5, "fp16": 835.5, "fp32": 60.0},
    "H100": {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2},
    "V100": {"fp16": 125.0, "fp32": 15.7},
    "T4": {"fp16": 65.0, "fp32": 8.1},
}


# Memory bandwidth, TB/s, from the same data sheets (HBM3e H200 4.8; H100 SXM 3.35, PCIe 2.0, NVL 3.9;
# A100 80GB 2.039 (40GB 1.555); L40S 0.864; L4 0.3; A10 0.6; V100 0.9; T4 0.32): what bounds decoding,
# which reads every weight and the KV cache once per token.
PEAK_TBPS: dict[str, float] = {
    "H200": 4.8, "H100 PCIe": 2.0, "H100 NVL": 3.9, "H100": 3.35, "A100-SXM4-40GB": 1.555,
    "A100-PCIE-40GB": 1.555, "A100": 2.039, "L40S": 0.864, "L4": 0.3, "A10": 0.6, "V100": 0.9,
    "T4": 0.32,
}


def _lookup(table: dict, name: str):
    for fragment, value in table.items():  # whole words: "A10" is not "A100", "L4" not "L40S";
        # the first match counts, so a variant ("H100 PCIe") is listed before its family ("H100")
        if re.search(rf"\b{re.escape(fragment)}\b", name):
            return value
    return None


def bandwidth_for_name(name: str) -> float | None:
    """The memory bandwidth (TB/s) of the GPU called `name`; None if unknown."""
    return _lookup(PEAK_TBPS, name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_tflops(device: torch.device, precision: str, override: float | None = None) -> float | None:
    """The device's dense peak for `precision`, or `override`; None when unknown (CPUs: give one)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    return peak_for_name(device_name(device), precision)


def peak_for_name(name: str, precision: str) -> float | None:
    """The dense peak of the GPU called `name` (as CUDA names it) for `precision`; None if unknown."""
    peaks = _lookup(PEAK_TFLOPS, name)
    return peaks.get(precision) if peaks else None


def block_params(model) -> int:
    """Parameters of the transformer blocks (GPT-2's `transformer.h`), the N of 6·N·T."""
    return sum(p.numel() for p in model.transformer.h.parameters())


def step_flops(model, row_lengths: list[int], n_targets: int) -> float:
    """Model FLOPs (forward + backward) of one step over rows of these lengths."""
    cfg = model.config
    n_blocks = block_params(model)
    body = sum(6 * n_blocks * t + 12 * cfg.n_layer * cfg.n_embd * t * t for t in row_lengths)
    return float(body + 6 * cfg.n_embd * cfg.vocab_size * n_targets)
