"""The DeepSpeed engine: the project's only DeepSpeed import.

A trial runs one process. DeepSpeed needs the distributed environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT) even then; we set it with a port picked free by the OS for
every process, so two trials on one machine never clash on DeepSpeed's default 29500 (DeepSpeed
#3878, ray#35907). A real multi-process launcher (WORLD_SIZE > 1) keeps its own settings.

The optimiser and schedule are rebuilt for every task (as the reference), so the engine is too.
Mixed precision uses DeepSpeed's `torch_autocast` mode: the module keeps fp32 weights (the master
copy) and the forward pass runs under autocast, so nothing is lost when a task ends and the next
task's engine is built from the same weights.

Three of DeepSpeed's per-step chores are turned off or done another way where they cost without
doing anything (a single-GPU step is bound by the host's kernel launches; docs/performance.md):
- its throughput timer, on unless configured off, synchronises the device twice in every step (see
  `ds_config`); we report speed ourselves.
- at ZeRO stage 0 we clip the gradients ourselves, with PyTorch's foreach norm (a few kernels).
  DeepSpeed's `clip_grad_norm_` loops over the parameters (two kernels each) and builds two
  one-element tensors from Python floats, each a blocking host-to-device copy: two waits on the GPU
  in every step. The rule is the same: g *= min(1, max_norm / (||g|| + 1e-6)).
- in a single process at ZeRO 0, DeepSpeed's gradient all-reduce is an identity that still
  flattens every gradient into a buffer, scales it by 1/world_size, reduces it and copies it back;
  we skip it (ZeRO 1-2 reduce inside their optimiser, which needs that call).
Several processes (WORLD_SIZE > 1), ZeRO 1-2 and fp16 (its loss scaler unscales before clipping)
keep DeepSpeed's own paths. With `training.step_graph` (the paper policy's CUDA-graph step,
l2kd/step_graph.py) the engine builds and holds the module, and the step bypasses its forward and step.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket

import torch

from .config import TrainingConfig
from .model import TargetLogits

log = logging.getLogger(__name__)

if not torch.cuda.is_available():  # before anything (transformers included) imports DeepSpeed
    os.environ.setdefault("DS_ACCELERATOR", "cpu")



def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_distributed(device: torch.device) -> None:
    """Initialise the (single-process) distributed group once per process."""
    import deepspeed
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    backend = "nccl" if device.type == "cuda" else "gloo"
    # DeepSpeed prints "DeepSpeed ... shm_comm_op built successfully" on stdout at every start, even
    # when the op is cached: into trial.log with the rest, not onto the user's console
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    for line in printed.getvalue().splitlines():
        log.info("deepspeed: %s", line)
    log.info("distributed group up (%s, port %s)", backend, os.environ["MASTER_PORT"])


def clips_itself(training: TrainingConfig, precision: str) -> bool:
    """Whether the engine clips gradients itself (ZeRO 0, no loss scaler) rather than DeepSpeed."""
    return training.zero_stage == 0 and precision != "fp16"


def ds_config(training: TrainingConfig, precision: str) -> dict:
    """The DeepSpeed config a trial's training settings imply."""
    cfg: dict = {
        "train_micro_batch_size_per_gpu": 1,  # batches vary in size; DeepSpeed only logs this
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 0.0 if clips_itself(training, precision) else training.max_grad_norm,
        "zero_optimization": {"stage": training.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        # DeepSpeed's throughput timer is on by default and synchronises the whole device when a
        # forward starts and when a step ends (from the third step on, when no dataloader is given):
        # the host cannot queue the next step while the GPU finishes this one. We time steps ourselves.
        "timers": {"throughput": {"enabled": False}},
    }
    if precision in ("bf16", "fp16"):
        cfg["torch_autocast"] = {"enabled": True,
                                 "dtype": "bfloat16" if precision == "bf16" else "float16"}
    return cfg


def param_groups(model: torch.nn.Module, weight_decay: float, decay_layernorm: bool) -> list[dict]:
    """AdamW groups: no decay on biases (and norm weights unless asked for, see config), nor on a
    parameter marked `_l2kd_no_decay` (a LoRA model's embeddings, whose base rows must not move)."""
    norms = {f"{m_name}.{n}" if m_name else n for m_name, m in model.named_modules()
             if isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith("Norm")
             for n, _ in m.named_parameters(recurse=False)}  # LayerNorm, Llama's RMSNorm, ...
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_ln = ".ln_" in name or "ln_f." in name or name in norms
        frozen_rows = getattr(p, "_l2kd_no_decay", False)
        (no_decay if name.endswith("bias") or frozen_rows or (is_ln and not decay_layernorm)
         else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class Engine:
    """A DeepSpeed engine around the model for one task: forward, backward, step at a given lr."""

    def __init__(self, model: torch.nn.Module, training: TrainingConfig, precision: str,
                 device: torch.device):
        import deepspeed

        ensure_distributed(device)
        groups = param_groups(model, training.weight_decay, training.decay_layernorm)
        optimizer = torch.optim.AdamW(groups, lr=training.lr, eps=training.adam_eps,
                                      betas=(0.9, 0.999), fused=True)
        self.ds, self.optimizer, _, _ = deepspeed.initialize(
            model=TargetLogits(model, compile_blocks=training.compile), optimizer=optimizer,
            config=ds_config(training, precision))
        self.max_grad_norm = training.max_grad_norm if clips_itself(training, precision) else None
        self.params = [p for g in groups for p in g["params"]]
        if training.zero_stage == 0 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            self.ds.enable_backward_allreduce = False  # an identity that copies every gradient twice

    @property
    def module(self) -> torch.nn.Module:
        """The model being trained (for decoding and saving)."""
        return self.ds.module.gpt2

    @property
    def target_logits(self) -> torch.nn.Module:
        """The module DeepSpeed wraps (TargetLogits): what a step that bypasses DeepSpeed's forward
        and step calls (l2kd/step_graph.py)."""
        return self.ds.module

    def logits(self, input_ids: torch.Tensor, positions: torch.Tensor,
               task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """GPT-2's logits at the flat `positions` of `input_ids`, shape (len(positions), vocab);
        `task_ids` (one per input row) for task-conditioned models only."""
        if task_ids is None:
            return self.ds(input_ids, positions)
        return self.ds(input_ids, positions, task_ids)

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss)

    def step(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.max_grad_norm is not None:  # foreach norm, no host read (see the module's notes)
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
        self.ds.step()

    def close(self) -> None:
        """Drop optimiser state so the next task's engine starts fresh (and memory is freed)."""
        self.ds.optimizer = None
        self.optimizer = None
        self.ds = None
        self.params = []
