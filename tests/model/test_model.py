"""EmberVLM: configs, forward shapes, prefix-only heads, padding, loss masking, cached generation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from ember.labels import NUM_INCIDENTS, NUM_PLACES, NUM_ROBOT_TYPES
from ember_training.model import EmberVLM, ModelConfig, format_param_table
from ember_training.model.vision import VisionEncoder
from ember_training.testing import tiny_model

ROOT = Path(__file__).resolve().parents[2]


def _cfg(name: str) -> ModelConfig:
    return ModelConfig(**yaml.safe_load((ROOT / "config" / "train" / f"{name}.yaml").read_text())["model"])


@pytest.fixture(scope="module")
def model() -> EmberVLM:
    return tiny_model(seed=0)


def _batch(cfg: ModelConfig, b: int = 2, t: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(b, 3, cfg.image_size, cfg.image_size, generator=g)
    ids = torch.randint(6, cfg.vocab_size, (b, t), generator=g)
    return pixels, ids


def test_yaml_model_sections_map_to_model_config():
    tiny, small, full = _cfg("tiny"), _cfg("small"), _cfg("full")
    assert small.vision_model == full.vision_model == "repvit_m0_9"
    assert (small.n_layers, small.d_model, small.num_visual_tokens) == (6, 384, 8)
    assert small.vocab_size <= 8192 and full.vocab_size >= 50257
    assert tiny.n_layers == 2 and tiny.image_size < small.image_size


def test_unknown_model_key_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown key.*d_modle"):
        ModelConfig(d_modle=64)
    with pytest.raises(ValueError, match="unknown key.*extra"):
        ModelConfig.from_dict({"extra": 1})
    with pytest.raises(ValueError, match="n_heads"):
        ModelConfig(d_model=64, n_heads=3)


def test_forward_shapes(model):
    cfg = model.config
    pixels, ids = _batch(cfg)
    labels = ids.clone()
    labels[:, :4] = -100
    with torch.no_grad():
        out = model(pixels, ids, torch.ones_like(ids), torch.tensor([4, 4]), labels)
    assert out.lm_logits.shape == (2, 12, cfg.vocab_size)
    assert out.robot_logits.shape == (2, NUM_ROBOT_TYPES)
    assert out.confidence_logit.shape == (2,)
    assert out.incident_logits.shape == (2, NUM_INCIDENTS)
    assert out.place_logits.shape == (2, NUM_PLACES)
    assert out.image_embed.shape == out.text_embed.shape == (2, cfg.contrastive_dim)
    assert torch.allclose(out.image_embed.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert out.reasoning_states.shape == (2, cfg.reasoning_layers, cfg.reasoning_dim)
    assert out.logit_scale.dim() == 0 and float(out.logit_scale) > 1
    assert out.lm_loss is not None and torch.isfinite(out.lm_loss)
    assert model.encode_image(pixels).shape == (2, cfg.num_visual_tokens, cfg.d_model)


def test_heads_read_the_prefix_only(model):
    cfg = model.config
    pixels, ids = _batch(cfg, b=1, t=12)
    prompt_len = torch.tensor([5])
    other_target = ids.clone()
    other_target[0, 5:] = torch.flip(ids[0, 5:], [0]) % (cfg.vocab_size - 6) + 6
    other_prompt = ids.clone()
    other_prompt[0, 2] = (ids[0, 2] + 7) % cfg.vocab_size
    with torch.no_grad():
        a = model(pixels, ids, None, prompt_len)
        b = model(pixels, other_target, None, prompt_len)
        c = model(pixels, other_prompt, None, prompt_len)
        prefill = model(pixels, ids[:, :5])  # inference: the prompt alone
    for name in ("robot_logits", "incident_logits", "place_logits", "confidence_logit"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-6), name
        assert torch.allclose(getattr(a, name), getattr(prefill, name), atol=1e-5), name
        assert not torch.allclose(getattr(a, name), getattr(c, name), atol=1e-6), name
    assert not torch.allclose(a.lm_logits[:, 5:], b.lm_logits[:, 5:])


def test_right_padding_does_not_change_outputs(model):
    cfg = model.config
    pixels, ids = _batch(cfg, b=1, t=9)
    padded = torch.cat([ids, torch.ones(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 9, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a = model(pixels, ids, None, torch.tensor([4]))
        b = model(pixels, padded, mask, torch.tensor([4]))
    assert torch.allclose(a.lm_logits, b.lm_logits[:, :9], atol=1e-5)
    assert torch.allclose(a.robot_logits, b.robot_logits, atol=1e-5)
    assert torch.allclose(a.text_embed, b.text_embed, atol=1e-5)


def test_lm_loss_is_masked_next_token_ce(model):
    cfg = model.config
    pixels, ids = _batch(cfg, b=2, t=10)
    labels = ids.clone()
    labels[:, :6] = -100
    with torch.no_grad():
        out = model(pixels, ids, None, torch.tensor([6, 6]), labels)
        expected = F.cross_entropy(out.lm_logits[:, 5:-1].reshape(-1, cfg.vocab_size), ids[:, 6:].reshape(-1))
        assert torch.allclose(out.lm_loss, expected, atol=1e-5)
        none = model(pixels, ids, None, None, torch.full_like(ids, -100))
    assert float(none.lm_loss) == 0.0


def test_loss_backward_reaches_every_component(model):
    m = tiny_model(seed=3).train()
    cfg = m.config
    pixels, ids = _batch(cfg, b=2, t=8)
    out = m(pixels, ids, None, torch.tensor([3, 3]), ids)
    loss = out.lm_loss + out.robot_logits.sum() + (out.image_embed * out.text_embed).sum() * out.logit_scale
    loss.backward()
    for name in ("vision", "fusion", "decoder", "reasoning", "heads", "image_proj", "text_proj"):
        grads = [p.grad for p in getattr(m, name).parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), name
    assert m.logit_scale.grad is not None


def test_cached_greedy_generation_matches_full_forward(model):
    cfg = model.config
    pixels, ids = _batch(cfg, b=1, t=6)
    gen = model.generate(pixels, ids, max_new_tokens=5)
    seq = ids
    with torch.no_grad():
        for _ in range(len(gen.token_ids)):
            nxt = model(pixels, seq).lm_logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
        heads = model(pixels, ids)
    assert seq[0, 6:].tolist() == gen.token_ids
    assert torch.allclose(gen.robot_logits, heads.robot_logits, atol=1e-5)


def test_pool_matrix_equals_adaptive_avg_pool():
    enc = VisionEncoder(_cfg("tiny"))
    feats = torch.randn(2, 5, 7, 7)
    pool = enc.pool_matrix(7, 7, feats.device, feats.dtype)
    ours = torch.matmul(pool, feats.reshape(2, 5, 49).transpose(1, 2))
    ref = F.adaptive_avg_pool2d(feats, enc.grid).flatten(2).transpose(1, 2)
    assert enc.grid == (2, 4)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_from_scratch_is_trainable_even_if_freeze_requested():
    cfg = dataclasses.replace(_cfg("tiny"), freeze_vision=True, freeze_decoder=True)
    m = EmberVLM(cfg)
    assert all(p.requires_grad for p in m.parameters())


def test_pretrained_vision_checkpoint_loads_and_can_freeze(tmp_path):
    src = VisionEncoder(_cfg("tiny"))
    torch.save({"state_dict": src.backbone.state_dict()}, tmp_path / "repvit.pth")
    cfg = dataclasses.replace(_cfg("tiny"), vision_pretrained=str(tmp_path / "repvit.pth"), freeze_vision=True)
    enc = VisionEncoder(cfg)
    for (k, a), b in zip(src.backbone.state_dict().items(), enc.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert enc.pretrained and not any(p.requires_grad for p in enc.parameters())
    with pytest.raises(FileNotFoundError, match="vision_pretrained"):
        VisionEncoder(dataclasses.replace(cfg, vision_pretrained=str(tmp_path / "missing.pth")))


def test_pretrained_decoder_from_local_directory(tmp_path):
    cfg = _cfg("tiny")
    donor = EmberVLM(cfg).decoder.lm
    donor.save_pretrained(tmp_path / "lm")
    m = EmberVLM(dataclasses.replace(cfg, decoder_pretrained=str(tmp_path / "lm")))
    assert m.decoder.pretrained
    assert torch.equal(m.decoder.wte.weight, donor.transformer.wte.weight)
    with pytest.raises(ValueError, match="d_model"):
        EmberVLM(dataclasses.replace(cfg, decoder_pretrained=str(tmp_path / "lm"), d_model=128, n_heads=2))


def test_print_params_full_is_about_35m():
    table = format_param_table(EmberVLM(_cfg("full")))
    last = table.splitlines()[-1]
    assert last.startswith("total_params=") and " trainable_params=" in last
    total = int(last.split()[0].split("=")[1])
    trainable = int(last.split()[1].split("=")[1])
    assert 30_000_000 <= total <= 40_000_000
    assert trainable == total  # from scratch: nothing frozen
    assert "vision (RepViT)" in table and "decoder embeddings" in table
