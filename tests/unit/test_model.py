"""The CodeGeeX model: shapes, the top query layer, attention paths, FastGELU, presets, FLOPs."""

from __future__ import annotations

import math

import pytest
import torch

from codemill.train import flops
from codemill.train.model import (
    IGNORE_INDEX,
    PADDED_VOCAB_SIZE,
    PRESETS,
    CodeGeeX,
    ModelConfig,
    document_mask,
    fast_gelu,
    padded_vocab_size,
)


def tiny(**changes) -> ModelConfig:
    return ModelConfig(**{**PRESETS["tiny"].to_dict(), "dropout": 0.0, **changes})


def test_fast_gelu_matches_the_papers_formula():
    x = torch.linspace(-30, 30, 2001, dtype=torch.float64)
    # CodeGeeX's (MindSpore's) formula as written in its code: the exp factor multiplies the quotient.
    reference = x / (1 + torch.exp(-1.702 * x.abs())) * torch.exp(0.851 * (x - x.abs()))
    torch.testing.assert_close(fast_gelu(x), reference, rtol=1e-12, atol=1e-12)
    assert fast_gelu(torch.tensor(0.0)) == 0


def test_vocabulary_is_padded_to_a_multiple_of_128():
    assert padded_vocab_size(50_400) == 50_432
    assert PADDED_VOCAB_SIZE % 128 == 0 and PADDED_VOCAB_SIZE >= 50_400
    with pytest.raises(ValueError, match="multiple of 128"):
        tiny(vocab_size=50_400)


def test_shapes_and_loss():
    torch.manual_seed(0)
    model = CodeGeeX(tiny()).eval()
    tokens = torch.randint(0, 50_000, (3, 17))
    logits = model(tokens)
    assert logits.shape == (3, 17, PADDED_VOCAB_SIZE)
    labels = torch.randint(0, 50_000, (3, 17))
    labels[:, -4:] = IGNORE_INDEX
    loss = model(tokens, labels)
    expected = torch.nn.functional.cross_entropy(logits[:, :-4].reshape(-1, PADDED_VOCAB_SIZE),
                                                 labels[:, :-4].reshape(-1))
    torch.testing.assert_close(loss, expected)
    per_token = model(tokens, labels, reduction="none")
    assert per_token.shape == (3, 17) and (per_token[:, -4:] == 0).all()
    # An untrained model is close to uniform over the vocabulary.
    assert abs(loss.item() - math.log(PADDED_VOCAB_SIZE)) < 1.5


def test_logits_are_tied_to_the_word_embedding():
    model = CodeGeeX(tiny())
    names = [n for n, _ in model.named_parameters()]
    assert not any("lm_head" in n or "output" in n for n in names)
    model.word_embedding.weight.data.zero_()
    assert (model(torch.randint(0, 100, (1, 5))) == 0).all()


def test_top_query_layer_takes_its_query_from_the_position_embedding():
    torch.manual_seed(0)
    model = CodeGeeX(tiny()).eval()
    tokens = torch.randint(0, 50_000, (2, 12))
    before = model(tokens)
    with torch.no_grad():
        model.query_embedding.weight[5].add_(1.0)  # only the query of position 5 changes
    after = model(tokens)
    changed = (before - after).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [i == 5 for i in range(12)]
    # The top query layer is the only consumer of the query embedding.
    assert model.top_query.attention.query.in_features == model.config.hidden_size


def test_causality():
    torch.manual_seed(0)
    model = CodeGeeX(tiny()).eval()
    tokens = torch.randint(0, 50_000, (1, 10))
    changed = tokens.clone()
    changed[0, 7] = (changed[0, 7] + 1) % 50_000
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_document_masked_attention_agrees_with_causal_where_it_should():
    torch.manual_seed(0)
    masked = CodeGeeX(tiny(document_masking=True)).eval()
    plain = CodeGeeX(tiny()).eval()
    plain.load_state_dict(masked.state_dict())
    tokens = torch.randint(0, 50_000, (2, 16))
    one_document = torch.ones(2, 16, dtype=torch.long)
    # One document per row: the explicit mask is the causal mask, so both kernels give the same logits.
    torch.testing.assert_close(masked(tokens, document_ids=one_document), plain(tokens), rtol=1e-4, atol=1e-4)
    # Two documents: the first is unaffected, the second equals running it alone.
    two = torch.tensor([[1] * 6 + [2] * 10] * 2)
    split_logits = masked(tokens, document_ids=two)
    torch.testing.assert_close(split_logits[:, :6], plain(tokens)[:, :6], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(split_logits[:, 6:], plain(tokens)[:, 6:], atol=1e-4)


def test_document_mask():
    mask = document_mask(torch.tensor([[1, 1, 2, 2]]))[0, 0]
    assert mask.tolist() == [[True, False, False, False], [True, True, False, False],
                             [False, False, True, False], [False, False, True, True]]


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    base = CodeGeeX(tiny())
    checkpointed = CodeGeeX(tiny(activation_checkpointing=True))
    checkpointed.load_state_dict(base.state_dict())
    tokens = torch.randint(0, 50_000, (2, 8))
    for model in (base, checkpointed):
        model(tokens, tokens).backward()
    for (name, a), (_, b) in zip(base.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


@pytest.mark.parametrize("preset, billions", [("125m", 0.125), ("350m", 0.35), ("1.3b", 1.3), ("2.7b", 2.7),
                                              ("6.7b", 6.7), ("13b", 13.0)])
def test_preset_parameter_counts(preset, billions):
    cfg = PRESETS[preset]
    with torch.device("meta"):
        model = CodeGeeX(cfg)
    n = model.num_parameters()
    assert abs(n / 1e9 - billions) / billions < 0.1, n
    h, f, v, s, layers = cfg.hidden_size, cfg.ffn_hidden_size, cfg.vocab_size, cfg.max_seq_length, cfg.num_layers
    per_layer = 4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h  # attention, MLP, two LayerNorms
    assert n == layers * per_layer + v * h + 2 * s * h + 2 * h  # + embeddings, query embedding, final LN


def test_13b_is_the_papers_shape():
    cfg = PRESETS["13b"]
    assert (cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size, cfg.num_heads) == (40, 5120, 20480, 40)
    assert (cfg.max_seq_length, cfg.vocab_size, cfg.layernorm_eps, cfg.dropout) == (2048, 52_224, 1e-5, 0.1)


def test_flops_per_token():
    cfg = PRESETS["13b"]
    h, layers, s, v = cfg.hidden_size, cfg.num_layers, 2048, cfg.vocab_size
    # Megatron's closed form for FFN = 4h: 72·L·h²·(1 + s/(6h) + V/(12·h·L)) per token.
    megatron = 72 * layers * h * h * (1 + s / (6 * h) + v / (12 * h * layers))
    with torch.device("meta"):
        model = CodeGeeX(cfg)
    assert model.flops_per_token(s) == pytest.approx(megatron, rel=1e-12)
    assert model.flops_per_token(s) == pytest.approx(6 * model.num_parameters(), rel=0.15)
    assert flops.peak_flops("NVIDIA H200") == flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert flops.peak_flops("Some CPU") is None
    assert flops.mfu(1000.0, 1e12, 1e15, 2) == pytest.approx(0.5)
