"""l2kd: Lifelong Language Knowledge Distillation (L2KD) on LAMOL, at the scale of experiment grids.

Layers (each importable without the ones above it):
    config/tasks/registry -> data, model -> losses, decode, metrics -> methods -> engine -> trial
    -> teachers -> grid (the only Ray import); report reads result files only.
"""

__version__ = "0.1.0"
