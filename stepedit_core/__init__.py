"""stepedit: batch expressive speech editing."""

__version__ = "0.1.0"
