"""Step-Audio-EditX engine (stages in `engine`, instruction texts in `prompts`, the published
folder layout in `layout`). Importing this package loads neither torch nor a model."""

from stepedit_core.engines.stepaudio.layout import expected_layout, missing_files
from stepedit_core.engines.stepaudio.prompts import instruction_text, prompt_preview

__all__ = ["expected_layout", "instruction_text", "missing_files", "prompt_preview"]
