"""The method registry filled (every method module imported) and the functions that build a method
from its spec; `l2kd.methods` hands these out on first use."""

from __future__ import annotations

from ..config import MethodSpec, validate
from ..errors import ConfigError
from . import finetune, gem, kd, lamol, multitask, multitask_ca, o_lora, regularizers, single  # noqa: F401  (registration)
from .base import Method, MethodParams
from .registry import METHODS


def method_class(name: str) -> type[Method]:
    return METHODS.get(name, where="method")


def method_params(spec: MethodSpec) -> MethodParams:
    cls = method_class(spec.name)
    try:
        return validate(cls.Params, spec.params, "method")
    except ConfigError as e:
        raise ConfigError(str(e).replace("method: ", f"method ({spec.name}): ", 1)) from None


def make_method(spec: MethodSpec) -> Method:
    return method_class(spec.name)(method_params(spec))
