"""The vLLM rollout backend on a real engine (tiny Qwen3, fp32, CPU): no mocks.

One engine serves the whole module (start-up is seconds even in-process); tests set the adapter they
need first, since they share it. References are transformers + peft forwards in fp32.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from rltrain.config import RolloutConfig  # noqa: E402
from rltrain.rollout.vllm_backend import VLLMBackend  # noqa: E402
from rltrain.tiny import tiny_model_path  # noqa: E402
from rltrain.types import SamplingParams  # noqa: E402

pytestmark = pytest.mark.vllm

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK = 8
PROMPTS = [[1, 87, 85, 261, 201, 832, 762, 526, 85, 2, 201, 1, 325, 85, 75, 299, 438, 201], [1, 87, 85, 201]]
EOS_IDS = {2, 0}  # <|im_end|>, <|endoftext|>
_versions = itertools.count(1)


def _make_adapter(model_path: Path, out: Path, seed: int, rank: int = RANK) -> Path:
    """A peft LoRA with random A and B, so that it visibly moves the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return out


def _hf_logprobs(
    model_path: Path, adapter: Path | None, prompt: list[int], completion: list[int], temperature: float = 1.0
) -> list[float]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
    return logprobs.tolist()


def _mean_abs_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return float(torch.tensor(a).sub(torch.tensor(b)).abs().mean())


@pytest.fixture(scope="module")
def model_path() -> Path:
    return tiny_model_path("qwen3")


@pytest.fixture(scope="module")
def adapters(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: _make_adapter(model_path, root / name, seed) for name, seed in (("a", 1), ("b", 2))}


@pytest.fixture(scope="module")
def backend(model_path: Path) -> Iterator[VLLMBackend]:
    rollout = RolloutConfig(enforce_eager=True, cpu_kv_cache_gib=0.0625)
    engine = VLLMBackend(
        str(model_path), rollout=rollout, dtype="float32", max_lora_rank=RANK, seed=0, max_model_len=256
    )
    yield engine
    engine.close()


def test_generate_shapes(backend: VLLMBackend) -> None:
    backend.load_adapter(None, next(_versions))
    groups = backend.generate(PROMPTS, 3, SamplingParams(max_tokens=12, seed=3))
    assert [g.prompt_ids for g in groups] == PROMPTS
    for group in groups:
        assert len(group.completions) == 3
        for c in group.completions:
            assert 0 < len(c.token_ids) == len(c.logprobs) <= 12
            assert all(-float("inf") < lp <= 0.0 for lp in c.logprobs)
            assert isinstance(c.text, str)
            if c.finish_reason == "length":
                assert len(c.token_ids) == 12
            else:
                assert c.finish_reason == "stop" and c.token_ids[-1] in EOS_IDS
    assert {"startup_s", "generate_s", "adapter_load_s"} <= backend.timings.keys()


def test_kv_cache_counts_whole_blocks_per_sequence(backend: VLLMBackend) -> None:
    """64 MiB of fp32 K and V for the tiny model (2 layers x 2 KV heads x 64 dims x 2 x 4 bytes = 2,048
    bytes a token) is 256 blocks of 128 tokens; one is vLLM's null block, a 256-token sequence takes two
    (the assumption rltrain.orchestrator.sizing.kv_cache_tokens sizes the CPU cache by)."""
    assert backend.kv_sequences == (256 - 1) // 2


def test_completions_carry_the_engine_weight_version(backend: VLLMBackend, adapters: dict[str, Path]) -> None:
    """The version comes from vLLM's own label (update_weight_version -> weight_versions spans)."""
    for adapter in (None, adapters["a"]):
        version = next(_versions)
        backend.load_adapter(adapter, version)
        assert backend.llm.get_weight_version() == f"v{version}"
        groups = backend.generate(PROMPTS, 2, SamplingParams(max_tokens=6, seed=3))
        assert {c.version for g in groups for c in g.completions} == {version}


def test_stop_token_is_kept(backend: VLLMBackend) -> None:
    backend.load_adapter(None, next(_versions))
    free = backend.generate(PROMPTS[:1], 1, SamplingParams(max_tokens=16, seed=11))[0].completions[0]
    stop = free.token_ids[3]
    cut = free.token_ids[: free.token_ids.index(stop) + 1]
    sampling = SamplingParams(max_tokens=16, seed=11, stop_token_ids=(stop,))
    stopped = backend.generate(PROMPTS[:1], 1, sampling)[0].completions[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == cut  # same seed, same stream, ending ON the stop token
    assert len(stopped.logprobs) == len(cut)


def test_seeded_generate_repeats(backend: VLLMBackend) -> None:
    backend.load_adapter(None, next(_versions))
    sampling = SamplingParams(max_tokens=10, temperature=0.9, seed=5)
    first, again = (backend.generate(PROMPTS, 4, sampling) for _ in range(2))
    other = backend.generate(PROMPTS, 4, SamplingParams(max_tokens=10, temperature=0.9, seed=6))

    def ids(groups: list) -> list[list[int]]:  # type: ignore[type-arg]
        return [c.token_ids for g in groups for c in g.completions]

    assert ids(first) == ids(again)
    assert ids(first) != ids(other)
    assert len({tuple(t) for t in ids(first)}) > 1  # the n samples of a prompt are not copies


def test_adapter_changes_distribution(backend: VLLMBackend, adapters: dict[str, Path]) -> None:
    backend.load_adapter(None, next(_versions))
    completion = backend.generate(PROMPTS[:1], 1, SamplingParams(max_tokens=16, seed=1))[0].completions[0]
    base = backend.score_logprobs(PROMPTS[0], completion.token_ids)
    backend.load_adapter(adapters["a"], next(_versions))
    tuned = backend.score_logprobs(PROMPTS[0], completion.token_ids)
    assert _mean_abs_diff(base, tuned) > 0.5
    backend.load_adapter(None, next(_versions))
    assert _mean_abs_diff(base, backend.score_logprobs(PROMPTS[0], completion.token_ids)) < 1e-6


@pytest.mark.parametrize("adapter_name", [None, "a"])
def test_logprob_parity_with_hf(
    backend: VLLMBackend, adapters: dict[str, Path], model_path: Path, adapter_name: str | None
) -> None:
    adapter = adapters[adapter_name] if adapter_name else None
    backend.load_adapter(adapter, next(_versions))
    temperature = 0.7  # != 1, so raw and temperature-processed logprobs would disagree
    sampling = SamplingParams(max_tokens=24, temperature=temperature, seed=2)
    completion = backend.generate(PROMPTS[:1], 1, sampling)[0].completions[0]
    hf_sampled = _hf_logprobs(model_path, adapter, PROMPTS[0], completion.token_ids, temperature)
    assert _mean_abs_diff(completion.logprobs, hf_sampled) < 1e-3
    hf_scored = _hf_logprobs(model_path, adapter, PROMPTS[0], completion.token_ids)
    assert _mean_abs_diff(backend.score_logprobs(PROMPTS[0], completion.token_ids), hf_scored) < 1e-3


def test_new_weights_in_same_dir_land(
    backend: VLLMBackend, adapters: dict[str, Path], model_path: Path, tmp_path: Path
) -> None:
    """Every load gets a fresh LoRA id, so rewritten weights are read again, never served from a cache."""
    slot = tmp_path / "adapter"
    shutil.copytree(adapters["a"], slot)
    backend.load_adapter(slot, next(_versions))
    completion = [85, 201, 832, 762, 526, 85, 2]
    shutil.rmtree(slot)
    shutil.copytree(adapters["b"], slot)
    backend.load_adapter(slot, next(_versions))
    expected = _hf_logprobs(model_path, adapters["b"], PROMPTS[1], completion)
    assert _mean_abs_diff(backend.score_logprobs(PROMPTS[1], completion), expected) < 1e-3
    assert backend.adapter_version is not None


def test_bad_adapter_names_the_knob_and_keeps_the_old_one(
    backend: VLLMBackend, adapters: dict[str, Path], model_path: Path, tmp_path: Path
) -> None:
    backend.load_adapter(adapters["a"], next(_versions))
    before = backend.score_logprobs(PROMPTS[1], [85, 201, 832])
    too_big = _make_adapter(model_path, tmp_path / "r16", seed=3, rank=2 * RANK)
    with pytest.raises(RuntimeError, match="max_lora_rank"):
        backend.load_adapter(too_big, next(_versions))
    assert backend.score_logprobs(PROMPTS[1], [85, 201, 832]) == before


def test_large_seeded_batch(backend: VLLMBackend) -> None:
    """Over 4k prompt tokens in one call: with chunked prefill, vLLM 0.32 CPU crashed on seeded requests."""
    backend.load_adapter(None, next(_versions))
    prompts = [PROMPTS[0] + [300 + i] for i in range(32)]
    groups = backend.generate(prompts, 8, SamplingParams(max_tokens=2, seed=9))
    assert sum(len(g.completions) for g in groups) == 256
    # A seeded prompt samples the same whatever else shares the batch.
    alone = backend.generate(prompts[:1], 8, SamplingParams(max_tokens=2, seed=9))
    assert [c.token_ids for c in alone[0].completions] == [c.token_ids for c in groups[0].completions]


def test_engine_leaves_trainer_threads_alone(backend: VLLMBackend) -> None:
    # vLLM's CPU worker replaces torch.set_num_threads with a no-op; the backend puts it back.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("index", "tp", "devices", "rank", "ids"),
    [
        (3, 1, None, 3, [3]),  # colocated: rank k's engine on GPU k (vLLM would take GPU 0)
        (0, 2, None, 0, None),  # one process, tensor parallel: vLLM's own first GPUs
        (2, 1, [4, 5, 6, 7], 2, [6]),  # split: rank 2 trains on GPU 2, its engine runs on GPU 6
    ],
)
def test_gpu_engine_arguments_are_vllms_own(
    index: int, tp: int, devices: list[int] | None, rank: int, ids: list[int] | None
) -> None:
    """The GPU path never runs here: at least every argument it passes must be one vLLM 0.32 takes,
    on the GPUs the placement says."""
    from vllm.engine.arg_utils import EngineArgs

    from rltrain.orchestrator.backends import engine_devices

    rollout = RolloutConfig(tensor_parallel_size=tp, enable_sleep_mode=True, devices=devices)
    dist = SimpleNamespace(world=4 if devices else 1, rank=rank, is_main=rank == 0)
    gpu = VLLMBackend.__new__(VLLMBackend)  # no engine: only the arguments are under test
    gpu.device, gpu.max_lora_rank = "cuda", RANK
    gpu.device_ids = engine_devices(rollout, torch.device("cuda", index), dist)  # type: ignore[arg-type]
    kwargs = gpu._engine_kwargs(rollout, "bfloat16", 0, None, None)
    assert kwargs.get("device_ids") == ids and kwargs["tensor_parallel_size"] == tp
    EngineArgs(model="unused", **kwargs)  # unknown keyword -> TypeError


def test_split_placement_needs_a_gpu_per_engine() -> None:
    from rltrain.orchestrator.backends import engine_devices

    rollout = RolloutConfig(devices=[4, 5])
    dist = SimpleNamespace(world=4, rank=0, is_main=True)
    with pytest.raises(
        ValueError, match=r"rollout.devices lists 2 GPUs; 4 rank\(s\) x tensor_parallel_size 1 need 4"
    ):
        engine_devices(rollout, torch.device("cuda", 0), dist)  # type: ignore[arg-type]
    assert engine_devices(rollout, torch.device("cpu"), dist) is None  # type: ignore[arg-type]
