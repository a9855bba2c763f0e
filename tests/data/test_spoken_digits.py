"""The embedded synthetic spoken digits."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from longmm.data.audio import LogMel, pad_waveforms
from longmm.data.builtin.spoken_digits import (
    F0_RANGE,
    make_speakers,
    make_spoken_digits,
    synthesize_digit,
)
from longmm.data.schema import AUDIO, Waveform


@pytest.fixture(scope="module")
def digits60():
    return make_spoken_digits(n_per_class=60, seed=0)


def _audio(samples) -> list[np.ndarray]:
    return [s.inputs[AUDIO].samples for s in samples]


def test_deterministic_and_seeded() -> None:
    a, b = make_spoken_digits(3, seed=5), make_spoken_digits(3, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(_audio(a), _audio(b), strict=True))
    c = make_spoken_digits(3, seed=6)
    assert not any(
        np.array_equal(x[:100], y[:100]) for x, y in zip(_audio(a), _audio(c), strict=True)
    )
    # Clip i depends only on (seed, i): a smaller set is a prefix of a larger one.
    d = make_spoken_digits(5, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(_audio(a), _audio(d), strict=False))


def test_synthesize_digit_is_deterministic_for_a_generator() -> None:
    x = synthesize_digit(7, np.random.default_rng(42))
    y = synthesize_digit(7, np.random.default_rng(42))
    assert np.array_equal(x, y)


def test_samples_shapes_rates_and_labels(digits60) -> None:
    assert len(digits60) == 600
    assert Counter(s.label for s in digits60) == {str(d): 60 for d in range(10)}
    assert {s.targets["speaker"] for s in digits60} == {f"synth{k}" for k in range(6)}
    for i, s in enumerate(digits60):
        wave = s.inputs[AUDIO]
        assert isinstance(wave, Waveform) and wave.sample_rate == 8000
        assert wave.samples.dtype == np.float32 and wave.samples.ndim == 1
        assert np.isfinite(wave.samples).all() and np.abs(wave.samples).max() <= 1.0
        assert 0.2 < wave.seconds < 1.5
        assert s.label == str(i % 10)
        assert s.where == f"spoken-digits[{i}]"
        assert s.meta["synthetic"] is True


def test_other_sample_rates_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    x = synthesize_digit(3, rng, sample_rate=16000)
    assert x.dtype == np.float32 and 0.2 * 16000 < len(x) < 1.5 * 16000
    with pytest.raises(ValueError):
        synthesize_digit(10, rng)
    with pytest.raises(ValueError):
        synthesize_digit(1, rng, sample_rate=4000)
    with pytest.raises(ValueError):
        make_speakers(0)


def test_speakers_span_the_pitch_range() -> None:
    voices = make_speakers(6)
    f0s = [v.f0 for v in voices]
    assert F0_RANGE[0] <= min(f0s) < 110 and 200 < max(f0s) <= F0_RANGE[1]
    assert len(set(f0s)) == 6


def test_fast() -> None:
    start = time.perf_counter()
    make_spoken_digits(n_per_class=30, seed=1)
    # ~0.5 ms a clip on one core; the bound leaves room for a loaded CI machine.
    assert time.perf_counter() - start < 5.0


def _mean_std_logmel(samples) -> np.ndarray:
    lm = LogMel(sample_rate=8000, n_fft=200, hop_length=80, n_mels=40)
    batch, lengths = pad_waveforms([s.inputs[AUDIO] for s in samples])
    with torch.no_grad():
        feats, mask = lm(batch, lengths)  # (B, M, F), (B, F)
    m = mask.unsqueeze(1).float()
    n = m.sum(-1)
    mean = (feats * m).sum(-1) / n
    std = (((feats - mean.unsqueeze(-1)) ** 2 * m).sum(-1) / n).sqrt()
    return torch.cat([mean, std], dim=1).numpy()


def _cv_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    return float(cross_val_score(model, x, y, cv=folds).mean())


def test_learnable_from_spectra_but_not_from_duration(digits60) -> None:
    y = np.array([int(s.label) for s in digits60])
    spectral = _cv_accuracy(_mean_std_logmel(digits60), y)
    seconds = np.array([[s.inputs[AUDIO].seconds] for s in digits60])
    by_duration = _cv_accuracy(seconds, y)
    assert spectral > 0.6, spectral  # chance is 0.1; measured about 0.9
    assert by_duration < 0.5, by_duration  # measured about 0.15
