"""Trial configs as every caller gets them: the config's shape (l2kd.config) and then each method's
own parameters and constraints (the method registry), both reported as one ConfigError line naming
the file and the key. It sits above both, so neither imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrialConfig, apply_overrides, load_yaml, validate
from .errors import ConfigError
from .methods import method_class, method_params
from .step_graph import check_step_graph


def check_method(cfg: TrialConfig, source: str) -> TrialConfig:
    """The method's parameters, the task orders it accepts, the settings it needs."""
    try:
        method_params(cfg.method)
        cls = method_class(cfg.method.name)
    except ConfigError as e:
        raise ConfigError(str(e), where=source) from None
    try:
        cls.check_tasks(cfg.tasks)
    except ValueError as e:
        raise ConfigError(f"tasks: {e}", where=source) from None
    try:
        cls.check_config(cfg)
    except ValueError as e:
        raise ConfigError(f"method ({cfg.method.name}): {e}", where=source) from None
    try:
        check_step_graph(cfg, cls)
    except ValueError as e:
        raise ConfigError(f"training.step_graph: {e}", where=source) from None
    return cfg


def trial_config(data: dict[str, Any], source: str = "<config>") -> TrialConfig:
    return check_method(validate(TrialConfig, data, source), source)


def load_trial_config(path: str | Path, overrides: list[str] | None = None) -> TrialConfig:
    data = apply_overrides(load_yaml(path), overrides or [])
    data.setdefault("name", Path(path).stem)
    return trial_config(data, str(path))
