"""The signal engine's array helpers: they live in stepedit_core.signal.gain (below QC)."""

from stepedit_core.signal.gain import crossfade, db_to_gain, fit_length, gain_to_db

__all__ = ["crossfade", "db_to_gain", "fit_length", "gain_to_db"]
