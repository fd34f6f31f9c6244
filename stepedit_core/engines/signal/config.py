"""The signal engine's settings (declared: flag, help, whether they change the output)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from stepedit_core.foundation.settings import Setting, SettingsGroup


class SignalConfig(SettingsGroup):
    """Signal engine"""

    vad_max_pause: Annotated[
        float,
        Field(ge=0.05, le=5),
        Setting(
            "seconds a pause may last after the vad edit (signal engine)",
            changes_output=True,
            flag="--vad-max-pause",
            metavar="SECONDS",
            fingerprint="always",
        ),
    ] = 0.3
