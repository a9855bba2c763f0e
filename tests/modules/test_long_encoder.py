"""The long encoder: its attention implementations agree with the dense reference, the
training path has gradients, the inference path is linear and equal to it."""

from __future__ import annotations

import warnings

import pytest
import torch

from longmm.modules import attention as A
from longmm.modules.long_encoder import LongEncoder
from longmm.modules.rotary import RotaryEmbedding

H, DH, BLOCK = 2, 8, 16
ATOL = 1e-5


def _qkv(n_blocks: int, n_global: int, seed: int = 0, pad: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = n_blocks * BLOCK
    q = torch.randn(2, n, H, DH, generator=g)
    k = torch.randn(2, n_global + n, H, DH, generator=g)
    v = torch.randn(2, n_global + n, H, DH, generator=g)
    mask = None
    if pad:
        mask = torch.ones(2, n_global + n, dtype=torch.bool)
        mask[1, -pad:] = False  # the second sequence is shorter
        if n_global:
            mask[0, n_global - 1] = False  # and the first has a padded question token
    return q, k, v, mask


@pytest.mark.parametrize("n_blocks", [1, 2, 3, 6])
@pytest.mark.parametrize("n_global", [0, 5])
@pytest.mark.parametrize("pad", [0, 21])
def test_blocked_and_flex_equal_the_dense_reference(n_blocks: int, n_global: int, pad: int):
    if pad >= n_blocks * BLOCK:
        pytest.skip("padding longer than the sequence")
    q, k, v, mask = _qkv(n_blocks, n_global, pad=pad)
    ref = A.dense_attention(q, k, v, mask, n_global, BLOCK)
    blocked = A.blocked_attention(q, k, v, mask, n_global, BLOCK)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FlexAttention warns that eager mode is slow
        flex = A.flex_window_attention(q, k, v, mask, n_global, BLOCK, compiled=False)
    real = torch.ones(2, q.shape[1], dtype=torch.bool) if mask is None else mask[:, n_global:]
    assert torch.allclose(blocked[real], ref[real], atol=ATOL)
    assert torch.allclose(flex[real], ref[real], atol=ATOL)


@pytest.mark.parametrize("n_global", [0, 4])
@pytest.mark.parametrize(("first", "count"), [(0, 7), (0, 2), (2, 3), (5, 2), (1, 1)])
def test_framed_segments_equal_blocked(n_global: int, first: int, count: int):
    q, k, v, mask = _qkv(7, n_global, seed=1, pad=5)
    n = q.shape[1]
    frames_k = A.make_frames(n, n_global, BLOCK, k)
    frames_v = torch.empty_like(frames_k)
    frames_k[:, :, :n_global], frames_v[:, :, :n_global] = (
        k[:, None, :n_global],
        v[:, None, :n_global],
    )
    frames_k[:, :, n_global:] = k[:, n_global:].view(2, -1, BLOCK, H, DH)
    frames_v[:, :, n_global:] = v[:, n_global:].view(2, -1, BLOCK, H, DH)
    bias = A.frame_bias(mask, n_global, BLOCK, q.dtype)
    rows = slice(first * BLOCK, (first + count) * BLOCK)
    framed = A.framed_window_attention(q[:, rows], frames_k, frames_v, bias, n_global, BLOCK, first)
    blocked = A.blocked_attention(q[:, rows], k, v, mask, n_global, BLOCK, first)
    assert torch.allclose(framed, blocked, atol=ATOL)
    if n_global:
        gq = torch.randn(2, n_global, H, DH)
        want = A.global_attention(gq, k, v, mask)
        got = A.framed_global_attention(gq, frames_k, frames_v, bias, n_global)
        assert torch.allclose(got, want, atol=ATOL)


def test_dense_mask_is_the_window_rule():
    allowed = A.allowed_keys(5 * 4, 2, 4, None, 1)[0]  # 5 blocks of 4, 2 global tokens
    assert allowed[:, :2].all()  # every local token sees the global ones
    keys_per_query = allowed[:, 2:].sum(dim=1)
    assert (keys_per_query == 12).all()  # three blocks, at the ends too
    assert allowed[0, 2 : 2 + 12].all() and not allowed[0, 2 + 12 :].any()  # block 0: 0, 1, 2
    assert allowed[19, 2 + 8 :].all() and not allowed[19, 2 : 2 + 8].any()  # block 4: 2, 3, 4
    assert allowed[9, 2 + 4 : 2 + 16].all()  # block 2: 1, 2, 3


def test_flex_block_mask_is_linear_in_length():
    n_local, tile = 64 * BLOCK, A.flex_tile(BLOCK)
    mask = torch.ones(1, n_local, dtype=torch.bool)
    bm = A.window_block_mask(n_local, 0, BLOCK, mask)
    assert int(bm.kv_num_blocks.max()) == 3 * BLOCK // tile  # a window, not the whole row


def test_flex_refuses_a_backward_on_cpu():
    q, k, v, _ = _qkv(2, 0)
    with pytest.raises(RuntimeError, match="no backward on CPU"):
        A.flex_window_attention(q.requires_grad_(), k, v, None, 0, BLOCK)


def test_unknown_implementation_is_named():
    q, k, v, _ = _qkv(2, 0)
    with pytest.raises(ValueError, match="unknown attention implementation 'fast'"):
        A.local_attention("fast", q, k, v, None, 0, BLOCK)


def test_rotary_scores_depend_on_offset_only():
    rot = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 12), torch.randn(1, 1, 1, 12)
    near = (rot(q, 5) * rot(k, 2)).sum()
    far = (rot(q, 1_000_005) * rot(k, 1_000_002)).sum()
    assert torch.allclose(near, far, atol=1e-4)
    assert torch.equal(rot(q, 7)[..., 8:], q[..., 8:])  # channels past rot_dim untouched
    out = torch.empty(1, 3, 1, 12)
    x = torch.randn(1, 3, 1, 12)
    assert torch.allclose(rot(x, 9, out=out), rot(x, 9))


def _encoder(**kw) -> LongEncoder:
    torch.manual_seed(0)
    return LongEncoder(60, dim=32, layers=2, heads=2, block=BLOCK, segment_blocks=2, **kw)


def _inputs(n: int = 75, g: int = 4):
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 60, (2, n), generator=gen)
    question = torch.randint(0, 60, (2, g), generator=gen)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, n - 23 :] = False
    return tokens, mask, question


def test_encoder_forward_backward_tiny():
    enc = _encoder()
    tokens, mask, question = _inputs()
    out = enc(tokens, mask, question)
    assert out.tokens.shape == (2, 75, 32) and out.global_tokens.shape == (2, 4, 32)
    loss = out.tokens[mask].pow(2).mean() + out.global_tokens.pow(2).mean()
    loss.backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_training_path_inference_path_and_reference_agree():
    enc = _encoder().eval()
    tokens, mask, question = _inputs()
    train_path = enc(tokens, mask, question)  # autograd: blocked SDPA
    with torch.no_grad():
        framed = enc(tokens, mask, question)  # framed, in segments of 2 blocks, in place
        dense = enc(tokens, mask, question, attention="dense")
    for other in (framed, dense):
        assert torch.allclose(other.tokens[mask], train_path.tokens[mask], atol=ATOL)
        assert torch.allclose(other.global_tokens, train_path.global_tokens, atol=ATOL)


def test_padding_is_invisible():
    enc = _encoder().eval()
    tokens, _, question = _inputs(n=40)
    with torch.no_grad():
        short = enc(tokens[:1, :30], None, question[:1])
        padded = enc(tokens[:1], torch.arange(40)[None] < 30, question[:1])
    assert torch.allclose(short.tokens, padded.tokens[:, :30], atol=ATOL)


def test_encoder_rejects_bad_input():
    enc = _encoder()
    with pytest.raises(ValueError, match="no tokens"):
        enc(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="200 global tokens"):
        enc(
            torch.zeros(1, 8, dtype=torch.long), global_tokens=torch.zeros(1, 200, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="attention must be one of"):
        LongEncoder(10, dim=8, heads=2, attention="sparse")


@pytest.mark.slow
def test_compiled_flex_equals_blocked():
    enc = _encoder().eval()
    tokens, mask, question = _inputs()
    with torch.no_grad():
        flex = enc(tokens, mask, question, attention="flex")
        framed = enc(tokens, mask, question)
    assert torch.allclose(flex.tokens[mask], framed.tokens[mask], atol=ATOL)
    assert torch.allclose(flex.global_tokens, framed.global_tokens, atol=ATOL)
