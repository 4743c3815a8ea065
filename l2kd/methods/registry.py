"""The method registry: name -> Method class."""

from __future__ import annotations

from ..registry import Registry
from .catalog import FACTS

METHODS: Registry = Registry("method")


def register(name: str):
    def add(cls):
        if name not in FACTS:  # the facts the report and the grid read without building a method
            raise ValueError(f"method {name!r} has no entry in l2kd/methods/catalog.py")
        cls.name = name
        cls.facts = FACTS[name]
        METHODS.register(name, cls)
        return cls

    return add
