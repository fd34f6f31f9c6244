"""Training data from a catalog: margin sets of (neutral, edited) pairs, with data cards."""

from stepedit_core.dataset.layout import card_path, sft_path
from stepedit_core.dataset.margin_set import MarginSpec, build_margin_set

__all__ = ["MarginSpec", "build_margin_set", "card_path", "sft_path"]
