"""Evaluation helpers (lviv / neuralpredictors ``utility`` layout)."""
from . import measures  # noqa: F401
