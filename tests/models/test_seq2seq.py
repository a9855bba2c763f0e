"""The encoder-decoder Transformer: shapes, padding, incremental decoding, search."""

from __future__ import annotations

import pytest
import torch

from longmm.models.seq2seq import Seq2SeqTransformer, length_penalty, sinusoidal_table

V, BOS, EOS = 40, 5, 6


def tiny(positions: str = "sinusoidal", **kw) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    args = dict(d_model=32, heads=4, enc_layers=2, dec_layers=2, ff=64, dropout=0.0, max_len=64)
    return Seq2SeqTransformer(V, positions=positions, **{**args, **kw}).eval()


def batch(lengths: list[int], width: int | None = None, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    src = torch.randint(7, V, (len(lengths), width), generator=g)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return src.masked_fill(~mask, 0), mask


@pytest.mark.parametrize("positions", ["sinusoidal", "rotary"])
def test_shapes(positions: str) -> None:
    model = tiny(positions)
    src, mask = batch([7, 4, 5])
    tgt = torch.randint(7, V, (3, 6))
    assert model.encode(src, mask).shape == (3, 7, 32)
    assert model(src, mask, tgt).shape == (3, 6, V)
    out = model.greedy(src, mask, BOS, EOS, max_len_a=1.0, max_len_b=2)
    assert out.ndim == 2 and out.shape[0] == 3 and out.dtype == torch.long


def test_tied_embeddings_share_the_matrix() -> None:
    assert tiny().out is None
    untied = tiny(tie_embeddings=False)
    assert untied.out is not None and untied.out.weight.shape == (V, 32)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="divisible"):
        Seq2SeqTransformer(V, d_model=30, heads=4)
    with pytest.raises(ValueError, match="positions"):
        Seq2SeqTransformer(V, positions="learned")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_len"):
        tiny(max_len=8)(torch.ones(1, 9, dtype=torch.long), None, torch.ones(1, 2).long())


@pytest.mark.parametrize("positions", ["sinusoidal", "rotary"])
def test_padding_does_not_change_a_sequence(positions: str) -> None:
    model = tiny(positions)
    src, mask = batch([8, 3, 5], width=10)  # every row padded, one heavily
    tgt = torch.randint(7, V, (3, 6))
    tgt_lengths = [6, 2, 4]
    padded = model(src, mask, tgt)
    for i, (s, t) in enumerate(zip([8, 3, 5], tgt_lengths, strict=True)):
        alone = model(src[i : i + 1, :s], mask[i : i + 1, :s], tgt[i : i + 1, :t])
        torch.testing.assert_close(padded[i : i + 1, :t], alone, atol=1e-5, rtol=1e-5)
        memory = model.encode(src[i : i + 1, :s], None)
        torch.testing.assert_close(
            model.encode(src, mask)[i : i + 1, :s], memory, atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("positions", ["sinusoidal", "rotary"])
def test_kv_cache_equals_full_recomputation(positions: str) -> None:
    model = tiny(positions)
    src, mask = batch([6, 3, 5])
    tgt = torch.randint(7, V, (3, 8))
    full = model(src, mask, tgt)  # (B, T, V)
    cache = model.start_cache(model.encode(src, mask), mask, max_steps=8)
    steps = torch.stack([model.decode_step(tgt[:, t], cache) for t in range(8)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cache"):
        model.decode_step(tgt[:, 0], cache)


def test_cache_reorder_follows_rows() -> None:
    model = tiny()
    src, mask = batch([6, 3])
    tgt = torch.randint(7, V, (2, 3))
    cache = model.start_cache(model.encode(src, mask), mask, max_steps=3)
    model.decode_step(tgt[:, 0], cache)
    cache.reorder(torch.tensor([1, 1, 0]))  # three rows now: sentence 1 twice, then 0
    out = model.decode_step(tgt[[1, 1, 0], 1], cache)
    full = model(src, mask, tgt[:, :2])[:, 1]
    torch.testing.assert_close(out, full[[1, 1, 0]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", ["sinusoidal", "rotary"])
def test_beam_size_one_equals_greedy(positions: str) -> None:
    model = tiny(positions)
    src, mask = batch([6, 3, 5, 7])
    greedy = model.greedy(src, mask, BOS, EOS, max_len_a=1.0, max_len_b=4)
    beam = model.beam_search(src, mask, BOS, EOS, beam_size=1, max_len_a=1.0, max_len_b=4)
    assert torch.equal(greedy, beam)


def test_decoding_under_bfloat16_autocast() -> None:
    """The recipe trains and validates under CPU bf16 autocast: decoding must run there."""
    model = tiny()
    src, mask = batch([6, 3, 5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cache = model.start_cache(model.encode(src, mask), mask, max_steps=4)
        assert cache.self_k[0].dtype == cache.cross_k[0].dtype == torch.bfloat16
        greedy = model.greedy(src, mask, BOS, EOS, max_len_a=1.0, max_len_b=2)
        beam = model.beam_search(src, mask, BOS, EOS, beam_size=1, max_len_a=1.0, max_len_b=2)
    assert torch.equal(greedy, beam)


def test_decoding_respects_length_limits_and_bans() -> None:
    model = tiny()
    src, mask = batch([6, 2])
    for out in (
        model.greedy(src, mask, BOS, EOS, max_len_a=1.0, max_len_b=1, banned_ids=(1, 2)),
        model.beam_search(src, mask, BOS, EOS, beam_size=3, max_len_a=1.0, max_len_b=1),
    ):
        lengths = (out != 0).sum(dim=1)
        assert (lengths <= torch.tensor([7, 3])).all()
        for row, n in zip(out, lengths, strict=True):
            assert int(row[n - 1]) == EOS  # every hypothesis ends in </s>
            assert not set(row[: n - 1].tolist()) & {0, BOS}
    greedy = model.greedy(src, mask, BOS, EOS, banned_ids=(1, 2))
    assert not set(greedy.flatten().tolist()) & {1, 2, BOS}


def test_beam_search_finds_the_better_scored_hypothesis() -> None:
    """A decoder whose greedy choice leads into a dead end: beam search must avoid it."""
    model = tiny()

    # Scripted log-probabilities: after <s>, token 10 (p=0.6) then only bad continuations;
    # token 11 (p=0.4) then </s> with certainty.
    def step(tokens: torch.Tensor, cache) -> torch.Tensor:
        t = cache.length
        cache.length += 1
        logits = torch.full((len(tokens), V), -30.0)
        for i, tok in enumerate(tokens.tolist()):
            if t == 0:
                logits[i, 10], logits[i, 11] = torch.tensor(0.6).log(), torch.tensor(0.4).log()
            elif tok == 10:
                logits[i, 12:22] = torch.tensor(0.1).log()  # ten equally unlikely words
            else:
                logits[i, EOS] = 0.0
        return logits

    model.decode_step = step  # type: ignore[method-assign]
    src, mask = batch([4])
    greedy = model.greedy(src, mask, BOS, EOS, max_len_a=0.0, max_len_b=3)
    beam = model.beam_search(
        src, mask, BOS, EOS, beam_size=2, length_penalty_alpha=0.0, max_len_a=0.0, max_len_b=3
    )
    assert greedy[0, 0] == 10
    assert beam[0].tolist()[:2] == [11, EOS]


def test_early_bad_endings_do_not_stop_the_search() -> None:
    """A confident model: the other beams end at once with poor scores; the search must go
    on until the likely hypothesis (10 12 </s>) finishes."""
    model = tiny()

    def step(tokens: torch.Tensor, cache) -> torch.Tensor:
        t = cache.length
        cache.length += 1
        logits = torch.full((len(tokens), V), -30.0)
        for i, tok in enumerate(tokens.tolist()):
            if t == 0:
                logits[i, 10], logits[i, EOS], logits[i, 11] = 5.0, 0.0, 0.0
            elif tok == 10:
                logits[i, 12] = 5.0
            else:
                logits[i, EOS] = 5.0
        return logits

    model.decode_step = step  # type: ignore[method-assign]
    src, mask = batch([4])
    for beam_size in (1, 2, 3):  # with 2 beams, two poor endings come first
        out = model.beam_search(src, mask, BOS, EOS, beam_size=beam_size, max_len_b=6)
        assert out[0].tolist() == [10, 12, EOS]


def test_helpers() -> None:
    assert length_penalty(1, 0.0) == 1.0
    assert length_penalty(7, 1.0) == pytest.approx(2.0)
    table = sinusoidal_table(10, 8)
    assert table.shape == (10, 8) and torch.allclose(table[0, 1::2], torch.ones(4))
