"""Audio preprocessing: resampling, batching, log-mel features and augmentation.

Features come from ``torch.stft`` and a standard (Slaney) mel filterbank built by librosa
once at construction, so the forward pass is pure torch: batched, differentiable, on any
device. Padding conventions: a waveform batch is ``(B, T)`` with ``lengths (B,)``; a
feature batch is ``(B, n_mels, frames)`` with ``frame_mask (B, frames)`` True on real
frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import librosa
import numpy as np
import torch
from torch import nn

from longmm.data.schema import Waveform


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along the last axis with soxr (high quality); a no-op when rates match.

    The output has ``ceil(T * target_sr / orig_sr)`` samples and the input's float dtype
    (float32 for integer input).
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return samples
    y = np.asarray(samples)
    if not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float32)
    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")


def pad_waveforms(
    waves: Sequence[torch.Tensor | np.ndarray | Waveform],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D waveforms with zeros into ``(B, T)`` float32 and their ``lengths (B,)``.

    ``T`` is at least 1 so that an all-empty batch still has a valid shape.
    """
    if len(waves) == 0:
        raise ValueError("pad_waveforms needs at least one waveform")
    tensors: list[torch.Tensor] = []
    for i, w in enumerate(waves):
        if isinstance(w, Waveform):
            w = w.samples
        t = torch.as_tensor(np.asarray(w, dtype=np.float32) if isinstance(w, np.ndarray) else w)
        if t.dim() != 1:
            raise ValueError(f"waveform {i} must be 1-D (T,), got shape {tuple(t.shape)}")
        tensors.append(t.to(torch.float32))
    lengths = torch.tensor([len(t) for t in tensors], dtype=torch.long)
    batch = torch.zeros(len(tensors), max(int(lengths.max()), 1), dtype=torch.float32)
    for i, t in enumerate(tensors):
        batch[i, : len(t)] = t
    return batch, lengths


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, max_len)`` bool mask, True on the first ``length`` steps."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


class LogMel(nn.Module):
    """Log mel spectrogram ``(B, n_mels, frames)`` of a waveform batch ``(B, T)``.

    Same values as ``librosa.feature.melspectrogram(power=2, center=True,
    pad_mode="constant")`` followed by ``log(x + log_offset)``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_offset: float = 1e-6,
    ) -> None:
        super().__init__()
        if f_max is not None and f_max > sample_rate / 2:
            raise ValueError(f"f_max={f_max} is above the Nyquist frequency {sample_rate / 2}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max
        self.log_offset = log_offset
        fb = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max
        )  # (n_mels, n_fft // 2 + 1)
        # Not persistent: both are functions of the arguments above, so checkpoints need not
        # carry them, and old checkpoints load after a librosa upgrade.
        self.register_buffer("mel_fb", torch.from_numpy(fb).to(torch.float32), persistent=False)
        # Periodic Hann, as librosa's get_window("hann", n_fft, fftbins=True).
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames of each clip as if it were analysed alone: ``1 + length // hop``, 0 if empty."""
        return torch.where(lengths > 0, 1 + lengths // self.hop_length, torch.zeros_like(lengths))

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``waveform (B, T)`` (or ``(T,)``) -> ``(features (B, n_mels, F), frame_mask (B, F))``."""
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        if waveform.dim() != 2:
            raise ValueError(f"waveform must be (B, T), got shape {tuple(waveform.shape)}")
        if waveform.dtype != torch.float64:
            # STFT in half precision loses the quiet bins that the log brings back up.
            waveform = waveform.to(torch.float32)
        # Zero ("constant") centre padding, not reflect: a padded clip then gives exactly the
        # frames it would give alone, and clips shorter than n_fft / 2 are accepted.
        spec = torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            window=self.window.to(waveform.dtype),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (B, n_fft // 2 + 1, F)
        # re^2 + im^2 rather than abs()^2: abs has an undefined gradient at zero.
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.mel_fb.to(power.dtype), power)  # (B, n_mels, F)
        features = torch.log(mel + self.log_offset)
        frames = features.shape[-1]
        if lengths is None:
            frame_mask = torch.ones(
                features.shape[0], frames, dtype=torch.bool, device=features.device
            )
        else:
            n = self.num_frames(lengths.to(features.device)).clamp(max=frames)
            frame_mask = lengths_to_mask(n, frames)
        return features, frame_mask

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}"
        )


class AudioAugment(nn.Module):
    """Random gain and white noise on waveforms; SpecAugment masking on features.

    Each augmentation hits a sample with probability ``p``. Everything is an identity in
    eval mode. Randomness comes from torch's global generator, which Lightning seeds.
    """

    def __init__(
        self,
        time_mask: int = 0,
        freq_mask: int = 0,
        n_time_masks: int = 1,
        n_freq_masks: int = 1,
        gain_db: float = 0.0,
        noise_snr_db: float | None = None,
        p: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("time_mask", time_mask),
            ("freq_mask", freq_mask),
            ("n_time_masks", n_time_masks),
            ("n_freq_masks", n_freq_masks),
            ("gain_db", gain_db),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.time_mask = time_mask
        self.freq_mask = freq_mask
        self.n_time_masks = n_time_masks
        self.n_freq_masks = n_freq_masks
        self.gain_db = gain_db
        self.noise_snr_db = noise_snr_db
        self.p = p

    def _chosen(self, batch: int, device: torch.device) -> torch.Tensor:
        """``(B,)`` bool: which samples this call augments."""
        return torch.rand(batch, device=device) < self.p

    def augment_waveform(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``wave (B, T)`` -> ``(B, T)`` with random gain and additive noise on real samples.

        No clipping to [-1, 1]: features are computed from the floats, and clipping would add
        distortion that the test data never has.
        """
        if not self.training or (self.gain_db == 0.0 and self.noise_snr_db is None):
            return wave
        batch, steps = wave.shape
        real = (
            torch.ones_like(wave, dtype=torch.bool)
            if lengths is None
            else lengths_to_mask(lengths.to(wave.device), steps)
        )  # (B, T)
        chosen = self._chosen(batch, wave.device).unsqueeze(1)  # (B, 1)
        out = wave
        if self.gain_db > 0.0:
            db = (torch.rand(batch, 1, device=wave.device) * 2.0 - 1.0) * self.gain_db
            gain = torch.where(chosen, torch.pow(10.0, db / 20.0), torch.ones_like(db))
            out = out * gain.to(out.dtype)
        if self.noise_snr_db is not None:
            real_f = real.to(out.dtype)
            n_real = real_f.sum(dim=1, keepdim=True).clamp(min=1.0)
            signal_power = (out.square() * real_f).sum(dim=1, keepdim=True) / n_real
            noise_power = signal_power / (10.0 ** (self.noise_snr_db / 10.0))
            noise = torch.randn_like(out) * noise_power.sqrt() * real_f
            out = out + noise * chosen.to(out.dtype)
        return out

    def augment_features(
        self, feats: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``feats (B, n_mels, F)`` -> same shape with time and frequency bands masked.

        Masks lie inside each sample's real frames and are filled with that sample's mean
        over its real values: in the log domain a 0 would be a loud, not a silent, band.
        """
        if not self.training or (self.time_mask == 0 and self.freq_mask == 0):
            return feats
        batch, n_mels, frames = feats.shape
        device = feats.device
        real = (
            torch.ones(batch, frames, dtype=torch.bool, device=device)
            if frame_mask is None
            else frame_mask.to(device=device, dtype=torch.bool)
        )  # (B, F)
        n_real = real.sum(dim=1)  # (B,)
        chosen = self._chosen(batch, device)  # (B,)

        time_hit = _random_bands(n_real, self.time_mask, self.n_time_masks, frames) & real
        all_mels = torch.full_like(n_real, n_mels)
        freq_hit = _random_bands(all_mels, self.freq_mask, self.n_freq_masks, n_mels)
        hit = (time_hit.unsqueeze(1) | freq_hit.unsqueeze(2)) & real.unsqueeze(1)  # (B, M, F)
        hit = hit & chosen.view(batch, 1, 1)

        real_f = real.unsqueeze(1).to(feats.dtype)  # (B, 1, F)
        fill = (feats * real_f).sum(dim=(1, 2)) / (n_real.clamp(min=1) * n_mels).to(feats.dtype)
        return torch.where(hit, fill.view(batch, 1, 1), feats)

    def forward(self, feats: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Same as :meth:`augment_features`, the usual place to augment."""
        return self.augment_features(feats, frame_mask)

    def extra_repr(self) -> str:
        return (
            f"time_mask={self.time_mask}, freq_mask={self.freq_mask}, "
            f"n_time_masks={self.n_time_masks}, n_freq_masks={self.n_freq_masks}, "
            f"gain_db={self.gain_db}, noise_snr_db={self.noise_snr_db}, p={self.p}"
        )


def _random_bands(extent: torch.Tensor, max_width: int, count: int, size: int) -> torch.Tensor:
    """``(B, size)`` bool: ``count`` bands per row, each of width uniform in [0, max_width],
    placed uniformly inside the row's first ``extent`` positions."""
    batch = extent.shape[0]
    device = extent.device
    if max_width == 0 or count == 0:
        return torch.zeros(batch, size, dtype=torch.bool, device=device)
    limit = extent.unsqueeze(1)  # (B, 1)
    width = torch.randint(0, max_width + 1, (batch, count), device=device)
    width = torch.minimum(width, limit)
    # Start uniform in [0, extent - width]; rand * (span + 1) floored never reaches span + 1.
    span = (limit - width + 1).to(torch.float32)
    start = (torch.rand(batch, count, device=device) * span).long()
    start = torch.minimum(start, limit - width)
    pos = torch.arange(size, device=device).view(1, 1, size)
    inside = (pos >= start.unsqueeze(2)) & (pos < (start + width).unsqueeze(2))  # (B, C, size)
    return inside.any(dim=1)
