"""Step-Audio-EditX as three stages: tokenize (audio -> codes + decoder prompt features),
edit (the LLM, batched across clips) and decode (codes -> 24 kHz audio, one clip per call).

Per round, a stage works on the items with edits in that round (`item.round_edits`, written by
the round machinery): round 0 is the zero-shot `clone` of rows that ask for it, rounds >= 1 run
the row's other edits. Several model edits in one round (`emotion=happy;style=whisper`) run
one LLM pass each, and between two passes the clip makes the trip the public release makes
between two edits (see `roundtrip`): the pass's codes are decoded to audio with the pass's voice
prompt, written and read as 16-bit PCM, and tokenized again (peak cap, then the release
tokenizer's own resampling, normalisation and silence trim) to give the next pass its input
codes and, in chain prompt mode, its voice prompt (the release takes each edit's voice prompt
from that edit's input clip; in fixed mode the source clip stays the prompt). The decode stage
decodes the last pass. Between two rounds the output makes the same 16-bit write and read
(`StepAudioEngine.round_handoff`), as the release's iterations do: the next round's input (and,
in chain mode, its voice prompt) is the 16-bit audio, while the round's record keeps the decoded
output as it was made.

The round trip lives in the edit stage, which loads a decoder and a tokenizer of its own the first
time a batch holds a row with several model edits in a round. The other layout, one (tokenize,
edit, decode) triple per pass, was set aside: the number of passes differs from row to row and is
not known when the stage list is built, so it would need a fixed maximum of triples, each extra
triple being three more actor pools that hold GPU memory in every round whether or not a row
chains; rows with fewer passes would have to skip through the extra pools. In the edit stage the
passes of a batch stay batched in the LLM, and a round trip (one decode and one tokenization per
clip) is short next to generation. The price is GPU memory on the edit stage's workers once they
meet a chain: the decoder and tokenizer take about 5-6 GB more there (see the README's
placement text).

Data between stages lives in the item's `StepAudioTrace` (trace.py): the round input's codes,
the generated codes, the decoder's voice prompt (this round's input in chain mode, the original
clip in fixed mode), the speaker name of a clone prompt and one entry per LLM pass; the trace
also declares the columns the round record keeps of it (tokens, instruction, model
fingerprint, `passes_json`, `segments_json`). Each stage's loaded models are a small dataclass
of their own (models.py).

GPU shares (defaults fit one 16 GB+ GPU per worker set; override per stage with
`EngineOptions.gpus`): tokenize 0.2 (Paraformer encoder + vq06 ONNX, ~3 GB), edit 0.5 (3B LLM in
bf16, ~7 GB + KV cache), decode 0.3 (flow + vocoder, ~2-3 GB). Batch sizes (override with
`EngineOptions.batch_sizes`): tokenize 8, edit 16, decode 8 clips per call (decode loops over
them one by one, the flow model takes one clip per call).
Once the edit stage meets a row with several model edits in one round it also holds a decoder
and a tokenizer for the round trip (about 5-6 GB more on its GPU): with such rows the three
stages fit one 24 GB+ GPU, or give the edit stage a GPU of its own.

Sampling follows the release's `generate()` call on the model folder (temperature 0.7, the rest
from the folder's `generation_config.json`, see `generation_settings`); the engine's settings
(config.py) override it: `stepaudio_greedy` (default False), `stepaudio_temperature`,
`stepaudio_top_k`; `vllm_gpu_memory_utilization` (default 0.9 x the edit stage's GPU share).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from stepedit_core.engines.base import Engine, EngineNotReady
from stepedit_core.engines.options import EngineOptions
from stepedit_core.engines.stepaudio import (
    layout,
    prompts,
    roundtrip,
    segmented,
    tokens,
    upstream,
)
from stepedit_core.engines.stepaudio.generation_settings import (
    GenerationSettingsError,
    sampling_config,
)
from stepedit_core.engines.stepaudio.llm import MAX_LENGTH, Generation
from stepedit_core.engines.stepaudio.models import (
    DecodeModels,
    EditModels,
    RoundTripModels,
    TokenizeModels,
)
from stepedit_core.engines.stepaudio.text_tokenizer import TextTokenizerError
from stepedit_core.engines.stepaudio.tokenizer import Encoded
from stepedit_core.engines.stepaudio.trace import StepAudioTrace
from stepedit_core.foundation.edits import PARALINGUISTIC_TAGS, SPEED_FACTORS, STEPAUDIO, EditSpec
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.stages import EngineStage, Resources, Stage, WorkItem, guard

log = logging.getLogger(__name__)

DEFAULT_GPUS = {"tokenize": 0.2, "edit": 0.5, "decode": 0.3}
DEFAULT_BATCH = {"tokenize": 8, "edit": 16, "decode": 8}
CPUS = {"tokenize": 2.0, "edit": 2.0, "decode": 2.0}
MEMORY_MB = {"tokenize": 6000, "edit": 12000, "decode": 6000}
# Rough length of one inserted non-verbal sound, in codes (~0.6 s), for the length guard.
_TAG_CODES = 25

M = TypeVar("M")


class _StepAudioStage(EngineStage, Generic[M]):
    """Common plumbing: resources from options, models (`M`, models.py) loaded once in setup()."""

    stage_name = ""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self.name = self.stage_name
        self.resources = Resources(
            cpus=CPUS[self.stage_name],
            gpus=float(options.gpus.get(self.stage_name, DEFAULT_GPUS[self.stage_name])),
            memory_mb=MEMORY_MB[self.stage_name],
        )
        self.batch_size = int(
            options.batch_sizes.get(self.stage_name, DEFAULT_BATCH[self.stage_name])
        )
        self._parts: M | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_parts"] = None  # models never travel: each actor loads its own in setup()
        return state

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        """As every stage, except that a chapter runs as its segments (segmented.py)."""
        work = self.select(items)
        if work:
            segmented.run_stage(self, self.options, work)
        return items

    def device(self) -> str:
        import torch

        return "cuda" if self.resources.gpus > 0 and torch.cuda.is_available() else "cpu"

    def setup(self) -> None:
        if self._parts is None:
            self._parts = self._load()

    def _load(self) -> M:
        raise NotImplementedError

    @property
    def parts(self) -> M:
        if self._parts is None:
            raise RuntimeError(f"stage {self.name}: setup() was not called")
        return self._parts

    def _models_dir(self) -> Path:
        message = layout.not_ready_message(self.options.models_dir)
        if message:
            raise EngineNotReady(message)
        return Path(str(self.options.models_dir))

    def _component(self, key: str, folder: Path) -> Any:
        made = upstream.factories(self.options.stepaudio_factories).get(key)
        if made is not None:
            return made(folder)
        src = upstream.resolve_src(self.options.stepaudio_src)
        problem = upstream.src_problem(src)
        if problem:
            raise upstream.UpstreamMissing(problem)
        loader = {
            "audio_tokenizer": upstream.load_audio_tokenizer,
            "frontend": upstream.load_frontend,
            "decoder": upstream.load_decoder,
        }[key]
        return loader(str(src), folder)

    def _load_tokenizer(self) -> Any:
        from stepedit_core.engines.stepaudio.tokenizer import AudioTokenizer

        models = self._models_dir()
        tokenizer = self._component("audio_tokenizer", layout.tokenizer_dir(models))
        frontend = self._component("frontend", layout.cosyvoice_dir(models))
        return AudioTokenizer(tokenizer, frontend)

    def _load_decoder(self) -> Any:
        from stepedit_core.engines.stepaudio.decoder import Decoder

        cosyvoice = self._component("decoder", layout.cosyvoice_dir(self._models_dir()))
        _place(cosyvoice, self.device())
        return Decoder(cosyvoice)


class TokenizeStage(_StepAudioStage[TokenizeModels]):
    stage_name = "tokenize"

    def _load(self) -> TokenizeModels:
        return TokenizeModels(self._load_tokenizer())

    def process_item(self, item: WorkItem) -> None:
        tokenizer = self.parts.tokenizer
        if item.audio is None:
            raise ItemFailure("no_audio", "no input audio for this round")
        same = item.prompt is None or item.prompt is item.audio
        audio = item.samples("audio")  # read here when the round's input is a reference
        assert audio is not None
        prompt_audio = audio if same else item.samples("prompt")
        assert prompt_audio is not None
        encoded = tokenizer.encode(audio, with_features=same)
        if not encoded.codes:
            raise ItemFailure(
                "too_short",
                f"{audio.duration:.2f} s of audio gave no complete token group "
                f"({tokens.GROUP_SECONDS} s) after silence trimming",
            )
        prompt = encoded if same else tokenizer.encode(prompt_audio, with_features=True)
        if not prompt.codes:
            raise ItemFailure(
                "too_short",
                f"the voice prompt ({prompt_audio.duration:.2f} s) gave no complete token group",
            )
        trace = StepAudioTrace.of(item)
        trace.input_tokens = list(encoded.codes)
        trace.voice = Encoded(list(prompt.codes), prompt.feat, prompt.embedding)
        if any(spec.type == "clone" for spec in item.round_edits):
            trace.clone_speaker = prompts.clone_speaker_name(
                (item.text or "").strip(), audio.samples
            )


@dataclass
class _Passes:
    """One item's progress through the LLM passes of a round (one pass per edit): the next
    pass's input codes, the voice prompt that decodes them, and the passes done so far."""

    specs: tuple[EditSpec, ...]
    codes: list[int]
    transcript: str | None
    base_seed: int
    voice: Encoded | None = None
    input_from: str = "round_input"
    entries: list[roundtrip.PassEntry] = field(default_factory=list)


def expected_new_codes(spec: EditSpec, n_in: int, text: str | None, target: str | None) -> int:
    """How many codes an edit is expected to generate (for the length guard)."""
    if spec.type == "clone":
        ratio = len((target or "").strip()) / max(1, len((text or "").strip()))
        estimate = n_in * ratio
    elif spec.type == "speed" and spec.option in SPEED_FACTORS:
        estimate = n_in / SPEED_FACTORS[spec.option]
    elif spec.type == "paralinguistic":
        added = sum((target or "").count(t) - (text or "").count(t) for t in PARALINGUISTIC_TAGS)
        estimate = n_in + _TAG_CODES * max(0, added)
    else:
        estimate = n_in
    groups = math.ceil(estimate / tokens.GROUP_LEN)
    return max(1, groups) * tokens.GROUP_LEN


class EditStage(_StepAudioStage[EditModels]):
    stage_name = "edit"

    def _load(self) -> EditModels:
        models = self._models_dir()
        backend = self._backend(layout.llm_dir(models))
        try:
            backend.load()
        except TextTokenizerError as exc:  # a tokenizer folder the engine can not reproduce
            raise EngineNotReady(f"{layout.llm_dir(models)}: {exc}") from exc
        probe = [0, 1024, tokens.N_CODES - 1]
        seen = [i for i in backend.encode(tokens.to_text(probe)) if i >= tokens.AUDIO_ID_OFFSET]
        if seen != tokens.to_ids(probe):
            raise EngineNotReady(
                f"the tokenizer in {layout.llm_dir(models)} does not map <audio_N> to id "
                f"{tokens.AUDIO_ID_OFFSET} + N (got {seen} for {tokens.to_text(probe)})"
            )
        try:
            cfg = sampling_config(layout.llm_dir(models), self.options.sampling_overrides())
        except GenerationSettingsError as exc:
            raise EngineNotReady(str(exc)) from exc
        return EditModels(backend, cfg, layout.fingerprint(models))

    def _backend(self, folder: Path) -> Any:
        wanted = self.options.llm_backend
        if wanted not in ("transformers", "vllm"):
            raise EngineNotReady(f"unknown llm_backend {wanted!r}; valid: transformers, vllm")
        if wanted == "vllm":
            if importlib.util.find_spec("vllm") is not None and self.device() == "cuda":
                from stepedit_core.engines.stepaudio.vllm_backend import VLLMLLM

                share = self.options.vllm_gpu_memory_utilization
                util = float(share) if share else max(0.1, 0.9 * min(1.0, self.resources.gpus))
                return VLLMLLM(folder, gpu_memory_utilization=util)
            log.warning(
                "llm_backend=vllm asked for but vLLM or a GPU is missing: using transformers"
            )
        from stepedit_core.engines.stepaudio.llm import TransformersLLM

        return TransformersLLM(folder, self.device())

    def process_live(self, work: list[WorkItem]) -> None:
        plans: dict[int, _Passes] = {}
        for item in work:
            trace = StepAudioTrace.of(item)
            if trace.input_tokens is None:
                item.fail("no_tokens", "the tokenize stage left no input tokens")
                continue
            plans[id(item)] = _Passes(
                item.round_edits,
                list(trace.input_tokens),
                item.text,
                item.round_seed,
                voice=trace.voice,
            )
        passes = max((len(p.specs) for p in plans.values()), default=0)
        for index in range(passes):
            members = [
                item for item in work if not item.failed and index < len(plans[id(item)].specs)
            ]
            if index > 0 and members:  # the clip's trip through audio between two passes
                # loaded outside `guard`: a model that fails to load is no row's fault
                self._round_trip_parts()
                for item in members:
                    start = time.perf_counter()
                    guard(item, self._round_trip, plans[id(item)], index)
                    item.timings["round_trip"] = item.timings.get("round_trip", 0.0) + (
                        time.perf_counter() - start
                    )
                members = [item for item in members if not item.failed]
            requests: list[tuple[WorkItem, list[int], int]] = []
            for item in members:
                start = time.perf_counter()
                built = guard(item, self._build, plans[id(item)], index)
                item.timings[self.name] = item.timings.get(self.name, 0.0) + (
                    time.perf_counter() - start
                )
                if built is not None:
                    requests.append((item, built[0], built[1]))
            if not requests:
                continue
            start = time.perf_counter()
            results = self._generate([r[1] for r in requests], [r[2] for r in requests])
            share = (time.perf_counter() - start) / len(requests)
            for (item, _, _), result in zip(requests, results, strict=True):
                item.timings[self.name] = item.timings.get(self.name, 0.0) + share
                guard(item, self._accept, plans[id(item)], index, result)
        for item in work:
            plan = plans.get(id(item))
            if plan is None:
                continue
            trace = StepAudioTrace.of(item)
            trace.passes = list(plan.entries)  # also the passes a failed row got through
            if not item.failed:
                trace.output_tokens = list(plan.codes)
                trace.voice = plan.voice

    def _round_trip(self, item: WorkItem, plan: _Passes, index: int) -> None:
        """Pass `index`'s input: the previous pass's codes decoded, written and read as 16-bit
        audio and tokenized again, as the release does between two edits."""
        from stepedit_core.engines.stepaudio.decoder import DecodeError

        done = plan.specs[index - 1]
        voice = plan.voice
        if voice is None or voice.feat is None or voice.embedding is None:
            raise ItemFailure("no_tokens", "the tokenize stage left no voice prompt features")
        models = self._round_trip_parts()
        try:
            decoded = models.decoder.decode(plan.codes, voice.codes, voice.feat, voice.embedding)
        except tokens.TokenError as exc:
            raise ItemFailure("bad_generation", f"{done}: {exc}") from exc
        except DecodeError as exc:
            raise ItemFailure("bad_decode", f"{done}: {exc}") from exc
        reread = roundtrip.pcm16(decoded)
        chain = self.options.prompt_mode != "fixed"
        encoded = models.tokenizer.encode(reread, with_features=chain)
        if not encoded.codes:
            raise ItemFailure(
                "too_short",
                f"{done} gave {reread.duration:.2f} s of audio, no complete token group "
                f"({tokens.GROUP_SECONDS} s) for the next edit after silence trimming",
            )
        plan.codes = list(encoded.codes)
        plan.input_from = f"decoded_pass_{index}"
        if chain:
            plan.voice = Encoded(list(encoded.codes), encoded.feat, encoded.embedding)

    def _round_trip_parts(self) -> RoundTripModels:
        """The decoder and tokenizer of the round trip, loaded on first use: a run without
        chained model edits never holds them on the edit stage's GPU."""
        parts = self.parts
        if parts.round_trip is None:
            parts.round_trip = RoundTripModels(self._load_tokenizer(), self._load_decoder())
        return parts.round_trip

    def _build(self, item: WorkItem, plan: _Passes, index: int) -> tuple[list[int], int]:
        spec = plan.specs[index]
        llm, cfg = self.parts.llm, self.parts.sampling
        try:
            instruction = prompts.instruction_text(spec, plan.transcript, item.target_text)
        except ValueError as exc:
            raise ItemFailure("bad_edit", str(exc)) from exc
        audio = tokens.to_text(plan.codes)
        # the audit trail: the exact instruction of every pass, and which model ran it
        trace = StepAudioTrace.of(item)
        trace.instruction = (trace.instruction or "") + instruction
        trace.model_fingerprint = self.parts.fingerprint
        if spec.type == "clone":
            speaker = trace.clone_speaker or "clone_prompt"
            ids = prompts.clone_prompt_ids(
                llm.encode, speaker, (plan.transcript or "").strip(), audio, instruction
            )
        else:
            ids = prompts.edit_prompt_ids(llm.encode, instruction, audio)
        expected = expected_new_codes(spec, len(plan.codes), plan.transcript, item.target_text)
        self._check_length(spec, len(ids), len(plan.codes), expected, cfg.max_length)
        seed = (plan.base_seed + 1_000_003 * index) % (1 << 63)
        return ids, seed

    @staticmethod
    def _check_length(spec: EditSpec, n_prompt: int, n_audio: int, expected: int, cap: int) -> None:
        need = n_prompt + expected
        if need <= cap:
            return
        overhead = n_prompt - n_audio
        ratio = expected / max(1, n_audio)
        fits = max(0.0, tokens.seconds((cap - overhead) / (1.0 + ratio)))
        what = "a voice prompt clip" if spec.type == "clone" else "input audio"
        raise ItemFailure(
            "too_long",
            f"{spec}: the prompt holds {tokens.seconds(n_audio):.1f} s of audio "
            f"({n_prompt} tokens with the text) and the output is expected to take about "
            f"{tokens.seconds(expected):.1f} s ({expected} tokens): {need} tokens, over the "
            f"model's cap of {cap} tokens in all; {what} up to about {fits:.0f} s fits this edit",
        )

    def _generate(self, prompt_ids: list[list[int]], seeds: list[int]) -> list[Any]:
        """Generations (or the exception that stopped one); a failing batch is split in halves
        so one bad prompt (or an out-of-memory batch) does not sink the others."""
        llm, cfg = self.parts.llm, self.parts.sampling
        try:
            return list(llm.generate(prompt_ids, seeds, cfg))
        except Exception as exc:  # noqa: BLE001 - becomes a per-item failure below
            if len(prompt_ids) == 1:
                return [exc]
            log.warning("generation failed for a batch of %d (%s): splitting", len(seeds), exc)
            half = len(prompt_ids) // 2
            return self._generate(prompt_ids[:half], seeds[:half]) + self._generate(
                prompt_ids[half:], seeds[half:]
            )

    def _accept(self, item: WorkItem, plan: _Passes, index: int, result: Any) -> None:
        spec = plan.specs[index]
        cap = self.parts.sampling.max_length
        if isinstance(result, Exception):
            raise ItemFailure("generation_error", f"{spec}: {type(result).__name__}: {result}")
        assert isinstance(result, Generation)
        if not result.finished:
            raise ItemFailure(
                "bad_generation",
                f"{spec}: no end of audio within the {cap}-token cap "
                f"({len(result.ids)} tokens generated)",
            )
        try:
            codes = tokens.ids_to_codes(result.ids)
        except tokens.TokenError as exc:
            raise ItemFailure("bad_generation", f"{spec}: {exc}") from exc
        plan.entries.append(
            roundtrip.pass_entry(index + 1, spec, plan.codes, codes, plan.input_from)
        )
        plan.codes = codes
        if spec.kind.changes_text:
            plan.transcript = prompts.spoken_text(spec, item.target_text)


class DecodeStage(_StepAudioStage[DecodeModels]):
    stage_name = "decode"

    def _load(self) -> DecodeModels:
        return DecodeModels(self._load_decoder())

    def process_item(self, item: WorkItem) -> None:
        from stepedit_core.engines.stepaudio.decoder import DecodeError

        trace = StepAudioTrace.of(item)
        codes, voice = trace.output_tokens, trace.voice
        if codes is None or voice is None or voice.feat is None or voice.embedding is None:
            raise ItemFailure("no_tokens", "earlier stages left no tokens or prompt features")
        try:
            decoded = self.parts.decoder.decode(codes, voice.codes, voice.feat, voice.embedding)
        except tokens.TokenError as exc:
            raise ItemFailure("bad_generation", str(exc)) from exc
        except DecodeError as exc:
            raise ItemFailure("bad_decode", str(exc)) from exc
        item.set_output(decoded)
        for spec in item.round_edits:
            if spec.kind.changes_text:
                item.text = prompts.spoken_text(spec, item.target_text)


def _place(cosyvoice: Any, device: str) -> None:
    """Keep the upstream decoder on the CPU when the stage has no GPU share (it picks CUDA
    whenever CUDA exists)."""
    impl = getattr(cosyvoice, "cosy_impl", None)
    if device == "cpu" and impl is not None and hasattr(impl, "to"):
        impl.to("cpu")
        if hasattr(cosyvoice, "device"):
            import torch

            cosyvoice.device = torch.device("cpu")


class StepAudioEngine(Engine):
    name = STEPAUDIO
    version = "2"  # 2: clips over the window edited in segments; rounds through 16-bit audio
    description = (
        "Step-Audio-EditX (StepFun, 3B audio LLM): expressive edits and zero-shot cloning; "
        "needs --models DIR and a checkout of the public repository (--stepaudio-src)"
    )
    notes = {
        "speed": "named options only, no factors",
        "paralinguistic": "target_text carries tags: " + " ".join(PARALINGUISTIC_TAGS),
        "clone": (
            "the row's clip is the voice, text its transcript, target_text what to say "
            "(round 0; its paralinguistic tags are left out of what the clone says, "
            "dialect and language tags such as [Sichuanese] stay)"
        ),
    }

    # Rounds hand each other audio the way the release hands an edit's result to the next
    # iteration: written and read as 16-bit WAV (the same trip as between chained passes).
    round_handoff = staticmethod(roundtrip.pcm16)
    trace_type = StepAudioTrace

    def build_stages(self) -> list[Stage]:
        return [TokenizeStage(self.options), EditStage(self.options), DecodeStage(self.options)]

    def check_ready(self) -> None:
        message = layout.not_ready_message(self.options.models_dir)
        if message:
            raise EngineNotReady(message)
        try:
            folder = layout.llm_dir(Path(str(self.options.models_dir)))
            sampling_config(folder, self.options.sampling_overrides())
        except GenerationSettingsError as exc:
            raise EngineNotReady(str(exc)) from exc
        given = upstream.factories(self.options.stepaudio_factories)
        if not all(key in given for key in upstream.FACTORY_KEYS):
            problem = upstream.src_problem(upstream.resolve_src(self.options.stepaudio_src))
            if problem:
                raise upstream.UpstreamMissing(problem)
        missing = [
            pkg
            for pkg in ("torch", "transformers", "sentencepiece", "safetensors")
            if importlib.util.find_spec(pkg) is None
        ]
        if missing:
            raise EngineNotReady(
                f"engine step-audio-editx needs {', '.join(missing)}: "
                "pip install 'stepedit[stepaudio]'"
            )
        if self.options.llm_backend not in ("transformers", "vllm"):
            raise EngineNotReady(
                f"unknown llm_backend {self.options.llm_backend!r}; valid: transformers, vllm"
            )
        if self.options.llm_backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise EngineNotReady(
                "llm_backend vllm asked for but vLLM is not installed: pip install 'stepedit[vllm]'"
            )


__all__ = [
    "MAX_LENGTH",
    "DecodeStage",
    "EditStage",
    "StepAudioEngine",
    "TokenizeStage",
    "expected_new_codes",
]
