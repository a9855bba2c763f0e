"""Audio preprocessing: resampling, padding, log-mel, augmentation."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from longmm.data.audio import AudioAugment, LogMel, lengths_to_mask, pad_waveforms, resample
from longmm.data.schema import Waveform


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# resample / pad_waveforms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "orig", "target"),
    [(16000, 16000, 8000), (8000, 8000, 16000), (44100, 44100, 16000), (1001, 16000, 8000)],
)
def test_resample_length(n: int, orig: int, target: int) -> None:
    out = resample(_noise(n), orig, target)
    assert out.shape == (int(np.ceil(n * target / orig)),)
    assert out.dtype == np.float32


def test_resample_is_a_no_op_at_the_same_rate() -> None:
    x = _noise(100)
    assert resample(x, 16000, 16000) is x


def test_resample_keeps_the_pitch() -> None:
    sr, hz = 16000, 440.0
    x = np.sin(2 * np.pi * hz * np.arange(sr) / sr).astype(np.float32)
    y = resample(x, sr, 8000)
    peak = np.argmax(np.abs(np.fft.rfft(y))) * 8000 / len(y)
    assert abs(peak - hz) < 2.0


def test_resample_rejects_bad_rates() -> None:
    with pytest.raises(ValueError):
        resample(_noise(10), 0, 8000)


def test_pad_waveforms_mixed_inputs() -> None:
    a = _noise(5)
    b = torch.ones(3)
    c = Waveform(_noise(7, seed=1), 8000)
    batch, lengths = pad_waveforms([a, b, c])
    assert batch.shape == (3, 7) and batch.dtype == torch.float32
    assert lengths.tolist() == [5, 3, 7]
    assert torch.equal(batch[0, :5], torch.from_numpy(a))
    assert (batch[1, 3:] == 0).all() and (batch[0, 5:] == 0).all()


def test_pad_waveforms_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        pad_waveforms([])
    with pytest.raises(ValueError, match="waveform 1"):
        pad_waveforms([np.zeros(3), np.zeros((2, 3))])


# --------------------------------------------------------------------------------------------
# LogMel
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 40, "f_max": 3800.0},
        {"sample_rate": 16000, "n_fft": 512, "hop_length": 128, "n_mels": 80, "f_min": 50.0},
    ],
)
def test_logmel_matches_librosa(params: dict) -> None:
    lm = LogMel(**params)
    y = _noise(12345)
    feats, mask = lm(torch.from_numpy(y).unsqueeze(0))
    ref = librosa.feature.melspectrogram(
        y=y,
        sr=lm.sample_rate,
        n_fft=lm.n_fft,
        hop_length=lm.hop_length,
        n_mels=lm.n_mels,
        fmin=lm.f_min,
        fmax=lm.f_max,
        power=2.0,
        center=True,
        pad_mode="constant",
    )
    assert feats.shape == (1, lm.n_mels, ref.shape[1])
    np.testing.assert_allclose(feats[0].numpy(), np.log(ref + lm.log_offset), atol=1e-3)
    assert mask.all()


def test_logmel_padded_clip_equals_the_clip_alone() -> None:
    lm = LogMel(sample_rate=8000, n_fft=200, hop_length=80, n_mels=32)
    long, short = _noise(8000), _noise(1234, seed=2)
    batch, lengths = pad_waveforms([long, short])
    feats, mask = lm(batch, lengths)
    alone, _ = lm(torch.from_numpy(short))
    n = alone.shape[-1]
    assert mask.sum(1).tolist() == [feats.shape[-1], n]
    torch.testing.assert_close(feats[1, :, :n], alone[0], atol=1e-4, rtol=1e-4)


def test_logmel_frame_mask_edges() -> None:
    lm = LogMel(hop_length=160)
    assert lm.num_frames(torch.tensor([0, 1, 159, 160, 16000])).tolist() == [0, 1, 1, 2, 101]
    _, mask = lm(torch.zeros(2, 320), torch.tensor([0, 320]))
    assert mask.sum(1).tolist() == [0, 3]


def test_logmel_short_clip_and_gradients() -> None:
    lm = LogMel()
    wave = torch.zeros(2, 50, requires_grad=True)  # shorter than n_fft / 2, and silent
    feats, _ = lm(wave)
    feats.sum().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all()
    noisy = torch.from_numpy(_noise(400)).unsqueeze(0).requires_grad_()
    lm(noisy)[0].mean().backward()
    assert (
        noisy.grad is not None and torch.isfinite(noisy.grad).all() and noisy.grad.abs().sum() > 0
    )


def test_logmel_state_dict_is_empty_and_dtype_follows_module() -> None:
    lm = LogMel()
    assert lm.state_dict() == {}  # filterbank and window are derived, not stored
    feats, _ = lm.double()(torch.from_numpy(_noise(800)).double().unsqueeze(0))
    assert feats.dtype == torch.float64


def test_logmel_rejects_f_max_above_nyquist() -> None:
    with pytest.raises(ValueError):
        LogMel(sample_rate=8000, f_max=5000.0)


def test_lengths_to_mask() -> None:
    assert lengths_to_mask(torch.tensor([0, 2, 3]), 3).tolist() == [
        [False, False, False],
        [True, True, False],
        [True, True, True],
    ]


# --------------------------------------------------------------------------------------------
# AudioAugment
# --------------------------------------------------------------------------------------------


def _feature_batch() -> tuple[torch.Tensor, torch.Tensor]:
    feats = torch.randn(4, 20, 60)
    mask = lengths_to_mask(torch.tensor([60, 45, 10, 1]), 60)
    return feats.masked_fill(~mask.unsqueeze(1), 123.0), mask


def test_augment_is_identity_in_eval() -> None:
    aug = AudioAugment(time_mask=10, freq_mask=5, gain_db=6.0, noise_snr_db=10.0).eval()
    wave, lengths = pad_waveforms([_noise(1000), _noise(500)])
    feats, mask = _feature_batch()
    assert aug.augment_waveform(wave, lengths) is wave
    assert aug.augment_features(feats, mask) is feats
    assert aug(feats, mask) is feats


def test_augment_features_masks_inside_real_frames_only() -> None:
    torch.manual_seed(0)
    aug = AudioAugment(time_mask=8, freq_mask=4, n_time_masks=2, n_freq_masks=2).train()
    feats, mask = _feature_batch()
    changed = torch.zeros_like(feats, dtype=torch.bool)
    for _ in range(20):
        out = aug.augment_features(feats, mask)
        assert out.shape == feats.shape
        changed |= out != feats
        assert (out.masked_select(~mask.unsqueeze(1)) == 123.0).all()
    assert changed.any()
    assert not (changed & ~mask.unsqueeze(1)).any()
    # Both kinds of band show up: whole frames and whole mel rows within the real frames.
    assert changed[0].all(dim=0).any() and changed[0].all(dim=1).any()


def test_augment_features_fill_is_the_sample_mean() -> None:
    torch.manual_seed(1)
    aug = AudioAugment(time_mask=30).train()
    feats, mask = _feature_batch()
    out = aug.augment_features(feats, mask)
    for b in range(feats.shape[0]):
        real = feats[b][:, mask[b]]
        hit = (out[b] != feats[b]) & mask[b]
        if hit.any():
            torch.testing.assert_close(out[b][hit], real.mean().expand(int(hit.sum())))


def test_augment_waveform_gain_and_noise() -> None:
    torch.manual_seed(0)
    wave, lengths = pad_waveforms([_noise(16000), _noise(8000, seed=3)])
    gain_only = AudioAugment(gain_db=6.0).train().augment_waveform(wave, lengths)
    ratio = gain_only[:, :8000] / wave[:, :8000]
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
    assert ((ratio[:, 0] >= 10 ** (-6 / 20) - 1e-6) & (ratio[:, 0] <= 10 ** (6 / 20) + 1e-6)).all()
    assert not torch.equal(gain_only, wave)

    noisy = AudioAugment(noise_snr_db=10.0).train().augment_waveform(wave, lengths)
    assert (noisy[1, 8000:] == 0).all()  # padding stays silent
    noise = noisy - wave
    for b, n in enumerate(lengths.tolist()):
        snr = 10 * torch.log10(wave[b, :n].square().mean() / noise[b, :n].square().mean())
        assert abs(snr.item() - 10.0) < 0.5


def test_augment_probability_zero_changes_nothing() -> None:
    aug = AudioAugment(time_mask=10, freq_mask=5, gain_db=6.0, noise_snr_db=0.0, p=0.0).train()
    wave, lengths = pad_waveforms([_noise(1000)])
    feats, mask = _feature_batch()
    assert torch.equal(aug.augment_waveform(wave, lengths), wave)
    assert torch.equal(aug.augment_features(feats, mask), feats)


def test_augment_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        AudioAugment(time_mask=-1)
    with pytest.raises(ValueError):
        AudioAugment(p=2.0)
