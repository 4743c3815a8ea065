"""Task-conditioned modules for GPT-2 (CA-MTL style), used by the `multitask_ca` upper bound.

What is added (after /work/shared/docs/reference/ca-mtl.md §2 and §5):
- a task embedding z_t (one row per task of the trial, in task order);
- conditional layer norms on the upper half of the blocks: ln_1 and ln_2 of blocks
  n_layer//2 .. n_layer-1 become (1 + γ(z)) ⊙ LN(x) + β(z), [γ; β] = FiLM(z) = Linear(z). The
  pretrained LN's gain and bias stay as they are, so per task the gain is (1+γ)·w and the bias
  (1+γ)·b + β (the paper's form, gain and bias both conditioned; CA-MTL's code conditioned the gain
  only and put a d×d `task_transformation` in front, which adds no capacity to a linear FiLM);
- a conditional bottleneck adapter after the top block, before ln_f:
  h + up(gelu(down((1 + γ(z)) ⊙ h + β(z)))) (CA-MTL's bottleneck has no nonlinearity; we add GELU,
  as the fact sheet §5.1 suggests).
Every FiLM and the adapter's up-projection start at zero, so a freshly conditioned model computes
exactly plain GPT-2's function; the task embedding starts random (N(0, 0.02), GPT-2's init) so the
FiLM weights receive gradients from the first step.

The modules live under `gpt2.task_conditioning` and act through forward hooks, so GPT-2's own
module tree and state-dict keys are untouched: a checkpoint holds the extra `task_conditioning.*`
weights plus a `l2kd_task_conditioning` entry in its config, from which `install` rebuilds the
modules when it is loaded. A forward pass needs the task of every input row (`conditioned`):
training batches carry them (Batch.task_ids), evaluation conditions each task's prompts on it.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

CONFIG_KEY = "l2kd_task_conditioning"  # the entry in a saved model's config.json
INIT_STD = 0.02


@dataclass(frozen=True)
class ConditioningSpec:
    tasks: tuple[str, ...]
    task_dim: int  # size of z_t
    adapter_dim: int  # bottleneck width of the conditional adapter
    first_block: int  # conditional LNs on blocks first_block .. n_layer-1


class FiLM(nn.Module):
    """[γ; β] = Linear(z), zero-initialised: the identity modulation until it learns."""

    def __init__(self, task_dim: int, width: int):
        super().__init__()
        self.proj = nn.Linear(task_dim, 2 * width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(z).chunk(2, dim=-1)
        if z.dim() == 2:  # one task per row: broadcast over the positions of x (rows, positions, d)
            gamma, beta = gamma.unsqueeze(1), beta.unsqueeze(1)
        return (1 + gamma) * x + beta


class ConditionalNorm(nn.Module):
    """The FiLM of one LayerNorm's output; attached to the LN as a forward hook."""

    def __init__(self, owner: "TaskConditioning", task_dim: int, width: int):
        super().__init__()
        self.film = FiLM(task_dim, width)
        object.__setattr__(self, "_owner", owner)  # a plain reference, not a second registration

    def after_ln(self, module, args, output):
        return self.film(self._owner.z(), output)


class ConditionalAdapter(nn.Module):
    """A residual bottleneck on the top block's output; attached to ln_f as a forward pre-hook."""

    def __init__(self, owner: "TaskConditioning", task_dim: int, width: int, bottleneck: int):
        super().__init__()
        self.film = FiLM(task_dim, width)
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.normal_(self.down.weight, std=INIT_STD)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        object.__setattr__(self, "_owner", owner)

    def before_ln_f(self, module, args):
        (h,) = args
        return (h + self.up(F.gelu(self.down(self.film(self._owner.z(), h)))),)


class TaskConditioning(nn.Module):
    def __init__(self, spec: ConditioningSpec, n_layer: int, width: int):
        super().__init__()
        self.spec = spec
        self.embedding = nn.Embedding(len(spec.tasks), spec.task_dim)
        nn.init.normal_(self.embedding.weight, std=INIT_STD)
        self.norms = nn.ModuleDict({
            f"{b}_{ln}": ConditionalNorm(self, spec.task_dim, width)
            for b in range(spec.first_block, n_layer) for ln in ("ln_1", "ln_2")})
        self.adapter = ConditionalAdapter(self, spec.task_dim, width, spec.adapter_dim)
        self.ids: torch.Tensor | None = None  # the current task index: () or (rows,)

    def z(self) -> torch.Tensor:
        if self.ids is None:
            raise RuntimeError("a task-conditioned GPT-2 was run without a task (see conditioned())")
        return self.embedding(self.ids.to(self.embedding.weight.device))

    def index(self, task: str) -> int:
        if task not in self.spec.tasks:
            raise KeyError(f"task {task!r} is not one of the model's tasks {list(self.spec.tasks)}")
        return self.spec.tasks.index(task)


def is_conditioned(model: nn.Module) -> bool:
    return isinstance(getattr(model, "task_conditioning", None), TaskConditioning)


def install(model, spec: ConditioningSpec) -> TaskConditioning:
    """Add the modules to a GPT2LMHeadModel (once) and record the spec in its config."""
    if is_conditioned(model):
        return model.task_conditioning
    cfg = model.config
    if not 0 <= spec.first_block < cfg.n_layer:
        raise ValueError(f"first_block must lie in 0..{cfg.n_layer - 1}, got {spec.first_block}")
    device = model.get_input_embeddings().weight.device
    cond = TaskConditioning(spec, cfg.n_layer, cfg.n_embd).to(device)
    model.task_conditioning = cond
    blocks = model.transformer.h
    for key, norm in cond.norms.items():
        b, ln = key.split("_", 1)
        getattr(blocks[int(b)], ln).register_forward_hook(norm.after_ln)
    model.transformer.ln_f.register_forward_pre_hook(cond.adapter.before_ln_f)
    d = asdict(spec)
    d["tasks"] = list(spec.tasks)
    setattr(cfg, CONFIG_KEY, d)
    return cond


def spec_from_config(config) -> ConditioningSpec | None:
    d = getattr(config, CONFIG_KEY, None)
    if not d:
        return None
    return ConditioningSpec(tuple(d["tasks"]), int(d["task_dim"]), int(d["adapter_dim"]),
                            int(d["first_block"]))


def freeze_lower_half(model) -> int:
    """Freeze blocks 0 .. n_layer//2 - 1; never the token embeddings, which the LM head shares and
    the new task tokens need. Returns the number of frozen parameters."""
    frozen = 0
    for block in model.transformer.h[: model.config.n_layer // 2]:
        for p in block.parameters():
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


@contextlib.contextmanager
def conditioned(model: nn.Module, task: str | int | torch.Tensor | None) -> Iterator[None]:
    """Run `model` on `task` (a name, an index, or one index per input row). A plain GPT-2, or no
    task, leaves the model as it is."""
    cond = getattr(model, "task_conditioning", None)
    if not isinstance(cond, TaskConditioning) or task is None:
        yield
        return
    if isinstance(task, str):
        task = cond.index(task)
    ids = task if isinstance(task, torch.Tensor) else torch.tensor(task, dtype=torch.long)
    previous, cond.ids = cond.ids, ids
    try:
        yield
    finally:
        cond.ids = previous
