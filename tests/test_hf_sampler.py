"""The ``hf`` rollout backend's sampler (``verl_espo/rollout/hf_generate.py``): log-probs, EOS, top-k / top-p."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=128, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def _gen(model, prompts, spec, max_new=12, seed=0, eos=(1,)):
    from verl_espo.rollout.hf_generate import generate_batch

    generator = torch.Generator().manual_seed(seed)
    return generate_batch(
        model, prompts, [max_new] * len(prompts), spec,
        eos_token_ids=list(eos), pad_token_id=0, want_log_probs=True, generator=generator,
    )  # fmt: skip


def test_hf_log_probs_match_teacher_forcing(tiny_lm):
    from verl_espo.rollout.hf_generate import SamplingSpec

    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]  # ragged: left padding must not change the result
    for spec in (SamplingSpec(temperature=0.7), SamplingSpec(temperature=0)):
        for prompt, out in zip(prompts, _gen(tiny_lm, prompts, spec)):
            assert out.token_ids and len(out.log_probs) == len(out.token_ids)
            ids = torch.tensor([prompt + out.token_ids])
            with torch.no_grad():
                logits = tiny_lm(ids).logits[0, len(prompt) - 1 : -1].float()
            temperature = spec.temperature if spec.temperature > 0 else 1.0
            ref = torch.log_softmax(logits / temperature, -1).gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(out.log_probs), ref, atol=1e-5, rtol=0)
            if spec.temperature == 0:
                assert out.token_ids == logits.argmax(-1).tolist()[: len(out.token_ids)]


def test_hf_eos_cut_and_lengths(tiny_lm):
    from verl_espo.rollout.hf_generate import SamplingSpec, generate_batch

    eos = 17
    outs = generate_batch(
        tiny_lm, [[5, 6], [7]], [3, 9], SamplingSpec(temperature=1.0), eos_token_ids=[eos], pad_token_id=0,
        want_log_probs=False, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert len(outs[0].token_ids) <= 3 and len(outs[1].token_ids) <= 9
    for out in outs:
        assert out.log_probs is None
        assert eos not in out.token_ids[:-1]
        assert (out.finish_reason == "stop") == (out.token_ids[-1] == eos)


def test_hf_top_k_one_is_greedy(tiny_lm):
    from verl_espo.rollout.hf_generate import SamplingSpec

    greedy = _gen(tiny_lm, [[5, 6, 7]], SamplingSpec(temperature=0))[0].token_ids
    for seed in range(3):
        assert _gen(tiny_lm, [[5, 6, 7]], SamplingSpec(temperature=1.3, top_k=1), seed=seed)[0].token_ids == greedy
        assert _gen(tiny_lm, [[5, 6, 7]], SamplingSpec(temperature=1.3, top_p=1e-6), seed=seed)[0].token_ids == greedy


def test_hf_top_p_keeps_the_nucleus():
    from verl_espo.rollout.hf_generate import SampleAndRecord, SamplingSpec

    logits, ids = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])), torch.tensor([[0]])
    kept = SampleAndRecord(SamplingSpec(top_p=0.7)).warpers(ids, logits)
    assert torch.isfinite(kept).tolist() == [[True, True, False, False]]  # 0.5 < 0.7 <= 0.8
    kept = SampleAndRecord(SamplingSpec(top_k=3)).warpers(ids, logits)
    assert torch.isfinite(kept).tolist() == [[True, True, True, False]]
    assert len(SampleAndRecord(SamplingSpec(temperature=0, top_k=3, top_p=0.5)).warpers) == 0  # greedy: none


def test_hf_repetition_penalty_and_temperature_scale_the_recorded_distribution():
    from verl_espo.rollout.hf_generate import SampleAndRecord, SamplingSpec

    scores, ids = torch.tensor([[2.0, -1.0, 0.5, 1.0]]), torch.tensor([[0, 1]])
    scaled = SampleAndRecord(SamplingSpec(temperature=0.5, repetition_penalty=2.0)).scaling(ids, scores.clone())
    # seen tokens: positive logits divided by the penalty, negative ones multiplied; then / T
    torch.testing.assert_close(scaled, torch.tensor([[1.0, -2.0, 0.5, 1.0]]) / 0.5)
