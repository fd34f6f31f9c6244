"""Training data from a catalog: margin sets of (neutral, edited) pairs, with data cards."""

from stepedit_core.dataset.margin_set import MarginSpec, build_margin_set

__all__ = ["MarginSpec", "build_margin_set"]
