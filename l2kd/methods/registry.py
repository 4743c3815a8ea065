"""The method registry: name -> Method class."""

from __future__ import annotations

from ..registry import Registry

METHODS: Registry = Registry("method")


def register(name: str):
    def add(cls):
        cls.name = name
        METHODS.register(name, cls)
        return cls

    return add
