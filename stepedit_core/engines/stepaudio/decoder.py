"""Codes -> 24 kHz audio with the folder's flow-matching decoder and vocoder.

The flow model's inference path handles one clip per call, so clips are decoded one at a time
with the models resident. The prompt mel and speaker embedding are handed over in bfloat16, as
the public release does (the decoder casts them to its own dtype).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stepedit_core.engines.stepaudio import tokens
from stepedit_core.foundation.audio import Audio

OUTPUT_RATE = 24000


class DecodeError(ValueError):
    """The decoder returned no usable audio."""


class Decoder:
    def __init__(self, cosyvoice: Any) -> None:
        self.cosyvoice = cosyvoice

    def decode(
        self,
        codes: list[int],
        prompt_codes: list[int],
        prompt_feat: np.ndarray,
        prompt_embedding: np.ndarray,
    ) -> Audio:
        import torch

        tokens.validate_codes(codes)
        tokens.validate_codes(prompt_codes)
        token = torch.tensor([codes], dtype=torch.long)
        prompt_token = torch.tensor([prompt_codes], dtype=torch.long)
        feat = torch.from_numpy(np.ascontiguousarray(prompt_feat, dtype=np.float32))[None]
        embedding = torch.from_numpy(
            np.ascontiguousarray(prompt_embedding, dtype=np.float32).reshape(1, -1)
        )
        with torch.no_grad():
            speech = self.cosyvoice.token2wav_nonstream(
                token, prompt_token, feat.to(torch.bfloat16), embedding.to(torch.bfloat16)
            )
        samples = speech.detach().float().cpu().numpy().reshape(-1)
        if samples.size == 0:
            raise DecodeError("the decoder returned no samples")
        if not np.isfinite(samples).all():
            raise DecodeError(
                f"the decoder returned {int((~np.isfinite(samples)).sum())} NaN/inf samples"
            )
        return Audio(samples[:, None], OUTPUT_RATE)
