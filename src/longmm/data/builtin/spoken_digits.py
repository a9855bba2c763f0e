"""Spoken digits 0-9 as SYNTHETIC audio made by this module; these are not recordings.

No download and no text-to-speech package: each digit is a short made-up "word" built
with a source-filter model, the classic way to synthesize speech-like sound.

* Source: a glottal pulse train at pitch f0 (falling over the word), smoothed by a one-pole
  low-pass whose coefficient sets the spectral tilt (the timbre), plus a little breath
  noise; white noise for fricatives and stop bursts.
* Filter: 3 formant resonances whose frequencies follow per-digit trajectories, applied
  frame by frame in the STFT domain (overlap-add), so that formants can glide smoothly
  from one segment to the next; fricatives are noise through a band-pass.

Every digit is a sequence of segments loosely modelled on the English word: "six" is
/s/ + /ɪ/ + closure + /k/ burst + /s/, "nine" is nasal + the /aɪ/ glide + nasal, and so on.
Digits share sounds ("five" and "nine" share /aɪ/, "six" and "seven" start with /s/), and
all words have about the same length, so the classes overlap in pitch and duration and
have to be told apart by their spectra over time.

Per clip we vary the speaker (f0 85-255 Hz, vocal-tract length scaling the formants,
spectral tilt, breathiness), the speaking rate (0.7-1.4x), the formant targets (a few %),
the amplitude, leading and trailing silence, and the background noise (5-30 dB SNR,
random colour). The set is deterministic for a given seed: clip ``i`` depends only on
``(seed, i)`` and the speaker table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from longmm.data.schema import AUDIO, Sample, Waveform

NAME = "spoken-digits"
DIGITS = tuple(range(10))

F0_RANGE = (85.0, 255.0)
RATE_RANGE = (0.7, 1.4)
SNR_DB_RANGE = (5.0, 30.0)

_NEUTRAL = (500.0, 1500.0, 2500.0)  # schwa-like tract for unvoiced segments
_NASAL = (250.0, 1100.0, 2400.0)
_VOICED_FRIC = (280.0, 1300.0, 2400.0)


@dataclass(frozen=True)
class _Segment:
    """One sound of a word: formant targets (start -> end) and source amplitudes."""

    seconds: float
    formants: tuple[float, float, float] = _NEUTRAL
    formants_end: tuple[float, float, float] | None = None  # None: steady
    voice: float = 0.0  # amplitude of the voiced (pulse) source
    noise: float = 0.0  # amplitude of the noise (frication / burst) source
    noise_hz: float = 3000.0  # centre of the noise band
    noise_bw: float = 2000.0  # width of the noise band
    bandwidth_scale: float = 1.0  # nasals have broad, damped formants


Formants = tuple[float, float, float]


def _vowel(
    seconds: float, start: Formants, end: Formants | None = None, amp: float = 1.0
) -> _Segment:
    return _Segment(seconds, start, end, voice=amp)


def _nasal(seconds: float, amp: float = 0.35) -> _Segment:
    return _Segment(seconds, _NASAL, voice=amp, bandwidth_scale=2.0)


def _fricative(seconds: float, hz: float, bw: float, amp: float, voiced: float = 0.0) -> _Segment:
    formants = _VOICED_FRIC if voiced else _NEUTRAL
    return _Segment(seconds, formants, voice=voiced, noise=amp, noise_hz=hz, noise_bw=bw)


def _burst(hz: float, amp: float, seconds: float = 0.02) -> _Segment:
    return _Segment(seconds, noise=amp, noise_hz=hz, noise_bw=1500.0)


def _closure(seconds: float) -> _Segment:
    return _Segment(seconds)


# Formants (F1, F2, F3) in Hz for an adult male tract; speakers scale them.
_S = (3600.0, 800.0)  # /s/: strong, high, narrow-ish
_F = (2200.0, 3500.0)  # /f/, /θ/: weak, broad
_WORDS: dict[int, tuple[_Segment, ...]] = {
    0: (  # "zero": z-ɪ-r-oʊ
        _fricative(0.09, *_S, amp=0.35, voiced=0.3),
        _vowel(0.07, (400, 1900, 2600)),
        _vowel(0.06, (450, 1300, 1700), amp=0.8),
        _vowel(0.18, (520, 1000, 2400), (380, 800, 2300)),
    ),
    1: (  # "one": w-ʌ-n
        _vowel(0.07, (300, 700, 2200), amp=0.7),
        _vowel(0.20, (640, 1190, 2390)),
        _nasal(0.13),
    ),
    2: (  # "two": t-(aspiration)-u
        _burst(3200.0, 0.6),
        _fricative(0.05, 2500.0, 2500.0, amp=0.25),
        _vowel(0.30, (330, 1400, 2300), (300, 900, 2250)),
    ),
    3: (  # "three": θ-r-i
        _fricative(0.10, *_F, amp=0.18),
        _vowel(0.06, (450, 1300, 1700), amp=0.8),
        _vowel(0.25, (300, 2200, 2900)),
    ),
    4: (  # "four": f-ɔ-r
        _fricative(0.10, *_F, amp=0.2),
        _vowel(0.18, (570, 840, 2410)),
        _vowel(0.12, (500, 1200, 1700), amp=0.8),
    ),
    5: (  # "five": f-aɪ-v
        _fricative(0.09, *_F, amp=0.2),
        _vowel(0.25, (750, 1200, 2500), (400, 2100, 2700)),
        _fricative(0.07, *_F, amp=0.12, voiced=0.3),
    ),
    6: (  # "six": s-ɪ-k-s
        _fricative(0.11, *_S, amp=0.5),
        _vowel(0.10, (400, 1900, 2550)),
        _closure(0.04),
        _burst(1900.0, 0.5),
        _fricative(0.09, *_S, amp=0.45),
    ),
    7: (  # "seven": s-ɛ-v-ə-n
        _fricative(0.10, *_S, amp=0.5),
        _vowel(0.10, (550, 1770, 2490)),
        _fricative(0.05, *_F, amp=0.12, voiced=0.35),
        _vowel(0.06, (500, 1500, 2500), amp=0.7),
        _nasal(0.10),
    ),
    8: (  # "eight": eɪ-t
        _vowel(0.28, (550, 1800, 2500), (350, 2300, 2900)),
        _closure(0.05),
        _burst(3200.0, 0.45, seconds=0.025),
    ),
    9: (  # "nine": n-aɪ-n
        _nasal(0.09),
        _vowel(0.24, (750, 1200, 2500), (400, 2100, 2700)),
        _nasal(0.12),
    ),
}

_BANDWIDTHS = np.array([70.0, 100.0, 160.0])  # Hz, F1-F3


@dataclass(frozen=True)
class Speaker:
    """A synthetic voice: pitch, vocal-tract scaling of formants, tilt and breathiness."""

    f0: float  # Hz
    tract_scale: float  # formant multiplier; > 1 is a shorter tract (child/female-like)
    tilt: float  # one-pole low-pass coefficient of the glottal source; higher is darker
    breath: float  # aspiration noise relative to the pulse train


def make_speakers(n: int, seed: int = 0) -> list[Speaker]:
    """``n`` voices with f0 spread over 85-255 Hz (geometrically) and matching tract sizes."""
    if n < 1:
        raise ValueError(f"need at least one speaker, got {n}")
    rng = np.random.default_rng([seed, 0])  # a stream apart from the clips' [seed, 1, i]
    low, high = F0_RANGE
    # Keep clear of the range ends so that per-clip pitch jitter stays inside it.
    f0s = np.geomspace(low * 1.1, high / 1.1, n) if n > 1 else np.array([np.sqrt(low * high)])
    speakers = []
    for f0 in f0s:
        # Higher voices tend to come with shorter tracts, but not strictly.
        position = np.log(f0 / low) / np.log(high / low)  # 0..1
        scale = (0.88 + 0.3 * position) * rng.uniform(0.95, 1.05)
        speakers.append(
            Speaker(
                f0=float(f0),
                tract_scale=float(scale),
                tilt=float(rng.uniform(0.75, 0.95)),
                breath=float(rng.uniform(0.02, 0.15)),
            )
        )
    return speakers


def random_speaker(rng: np.random.Generator) -> Speaker:
    f0 = float(np.exp(rng.uniform(np.log(F0_RANGE[0]), np.log(F0_RANGE[1]))))
    position = np.log(f0 / F0_RANGE[0]) / np.log(F0_RANGE[1] / F0_RANGE[0])
    return Speaker(
        f0=f0,
        tract_scale=float((0.88 + 0.3 * position) * rng.uniform(0.95, 1.05)),
        tilt=float(rng.uniform(0.75, 0.95)),
        breath=float(rng.uniform(0.02, 0.15)),
    )


@dataclass
class _Tracks:
    """Frame-rate controls of one word, each ``(M,)`` or ``(M, 3)`` for M frames."""

    formants: np.ndarray  # (M, 3) Hz
    bandwidths: np.ndarray  # (M, 3) Hz
    voice: np.ndarray  # (M,)
    noise: np.ndarray  # (M,)
    noise_hz: np.ndarray  # (M,)
    noise_bw: np.ndarray  # (M,)


def _synthesis_frame(sample_rate: int) -> tuple[int, int]:
    """About 32 ms windows with a 75 % overlap (Hann^2 then sums to a constant 1.5)."""
    n_fft = int(2 ** round(np.log2(0.032 * sample_rate)))
    return n_fft, n_fft // 4


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along the first axis with edge padding: coarticulation, no clicks."""
    if width <= 1:
        return x
    pad = width // 2
    padded = np.pad(x, [(pad, width - 1 - pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    kernel = np.ones(width) / width
    if x.ndim == 1:
        return np.convolve(padded, kernel, mode="valid")
    return np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(x.shape[1])], 1)


def _word_tracks(
    digit: int, rng: np.random.Generator, speaker: Speaker, frame_seconds: float, nyquist: float
) -> _Tracks:
    rate = rng.uniform(*RATE_RANGE)
    tract = speaker.tract_scale * rng.uniform(0.94, 1.06)
    bw_scale = rng.uniform(0.8, 1.3)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _Tracks.__dataclass_fields__}
    for seg in _WORDS[digit]:
        frames = max(1, round(seg.seconds * rate * rng.uniform(0.85, 1.15) / frame_seconds))
        start = np.asarray(seg.formants) * rng.uniform(0.9, 1.1, 3)
        end = start if seg.formants_end is None else np.asarray(seg.formants_end)
        end = end * rng.uniform(0.9, 1.1, 3)
        ramp = np.linspace(0.0, 1.0, frames)[:, None]
        parts["formants"].append((start + (end - start) * ramp) * tract)
        bws = _BANDWIDTHS * seg.bandwidth_scale * bw_scale
        parts["bandwidths"].append(np.tile(bws, (frames, 1)))
        parts["voice"].append(np.full(frames, seg.voice * rng.uniform(0.7, 1.3)))
        parts["noise"].append(np.full(frames, seg.noise * rng.uniform(0.6, 1.5)))
        hz = min(seg.noise_hz * tract**0.5 * rng.uniform(0.88, 1.12), 0.9 * nyquist)
        parts["noise_hz"].append(np.full(frames, hz))
        parts["noise_bw"].append(np.full(frames, seg.noise_bw))
    tracks = {k: np.concatenate(v) for k, v in parts.items()}
    # Formants glide over ~40 ms between segments; amplitudes ramp over ~24 ms.
    glide = max(1, round(0.04 / frame_seconds))
    ramp_w = max(1, round(0.024 / frame_seconds))
    formants = np.minimum(_smooth(tracks["formants"], glide), 0.95 * nyquist)
    return _Tracks(
        formants=formants,
        bandwidths=tracks["bandwidths"],
        voice=_smooth(tracks["voice"], ramp_w),
        noise=_smooth(tracks["noise"], ramp_w),
        noise_hz=tracks["noise_hz"],
        noise_bw=tracks["noise_bw"],
    )


def _glottal_source(
    n_samples: int,
    n_frames: int,
    hop: int,
    speaker: Speaker,
    rng: np.random.Generator,
    sample_rate: int,
) -> np.ndarray:
    """Pulse train with a falling pitch and shimmer, tilted, plus breath noise.

    Pulses sit on whole samples; the rounding adds a natural-sounding pitch jitter.
    """
    f0 = speaker.f0 * rng.uniform(0.9, 1.1)
    contour = np.linspace(rng.uniform(1.02, 1.12), rng.uniform(0.85, 0.95), n_frames)
    f0_frames = np.clip(f0 * contour, *F0_RANGE)
    f0_samples = np.interp(np.arange(n_samples) / hop, np.arange(n_frames), f0_frames)
    phase = np.cumsum(f0_samples / sample_rate) + rng.uniform()
    onsets = np.flatnonzero(np.diff(np.floor(phase), prepend=np.floor(phase[0])) > 0)
    pulses = np.zeros(n_samples)
    # Height ~ sqrt(period) keeps the energy per second the same for low and high voices.
    heights = np.sqrt(sample_rate / f0_samples[onsets]) * rng.uniform(0.9, 1.1, onsets.size)
    pulses[onsets] = heights
    tilt = float(np.clip(speaker.tilt + rng.uniform(-0.03, 0.03), 0.5, 0.98))
    source = lfilter([1.0 - tilt], [1.0, -tilt], pulses)
    source = source / (np.sqrt(np.mean(source**2)) + 1e-12)
    return source + speaker.breath * rng.standard_normal(n_samples)


def _frames(x: np.ndarray, n_fft: int, hop: int, n_frames: int) -> np.ndarray:
    idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    return x[idx]  # (M, n_fft)


def _formant_envelope(freqs: np.ndarray, tracks: _Tracks) -> np.ndarray:
    """Cascade of 3 resonances, ``(M, bins)``, each frame scaled to unit RMS over bins."""
    f = freqs[None, :, None]  # (1, K, 1)
    formant = tracks.formants[:, None, :]  # (M, 1, 3)
    bw = tracks.bandwidths[:, None, :]
    response = formant**2 / np.sqrt((formant**2 - f**2) ** 2 + (bw * f) ** 2)
    env = np.prod(response, axis=2)  # (M, K)
    return env / np.sqrt(np.mean(env**2, axis=1, keepdims=True))


def _noise_envelope(freqs: np.ndarray, tracks: _Tracks) -> np.ndarray:
    """Gaussian band around the fricative centre, ``(M, bins)``, unit RMS per frame."""
    env = np.exp(
        -0.5 * ((freqs[None, :] - tracks.noise_hz[:, None]) / (tracks.noise_bw[:, None] / 2)) ** 2
    )
    return env / np.sqrt(np.mean(env**2, axis=1, keepdims=True))


def _render_word(
    digit: int, rng: np.random.Generator, speaker: Speaker, sample_rate: int
) -> np.ndarray:
    n_fft, hop = _synthesis_frame(sample_rate)
    tracks = _word_tracks(digit, rng, speaker, hop / sample_rate, sample_rate / 2)
    n_frames = len(tracks.voice)
    n_samples = (n_frames - 1) * hop + n_fft
    window = np.hanning(n_fft + 1)[:-1]  # periodic
    source = _glottal_source(n_samples, n_frames, hop, speaker, rng, sample_rate)
    white = rng.standard_normal(n_samples)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    voiced = np.fft.rfft(_frames(source, n_fft, hop, n_frames) * window, axis=1)
    hiss = np.fft.rfft(_frames(white, n_fft, hop, n_frames) * window, axis=1)
    spectrum = (
        voiced * _formant_envelope(freqs, tracks) * tracks.voice[:, None]
        + hiss * _noise_envelope(freqs, tracks) * tracks.noise[:, None]
    )  # (M, bins)
    frames = np.fft.irfft(spectrum, n=n_fft, axis=1) * window  # (M, n_fft)
    # Overlap-add: with hop = n_fft / 4, frame m's quarter q lands in output block m + q.
    blocks = np.zeros((n_frames + 3, hop))
    for q in range(4):
        blocks[q : q + n_frames] += frames[:, q * hop : (q + 1) * hop]
    return blocks.reshape(-1) / 1.5  # Hann^2 at 75 % overlap sums to 1.5


def _background(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of a random colour, from white (0) to strongly low-passed (0.9)."""
    colour = rng.uniform(0.0, 0.9)
    noise = lfilter([1.0], [1.0, -colour], rng.standard_normal(n))
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _channel(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random first-order microphone/room colour: from bright (c < 0) to muffled (c > 0)."""
    c = rng.uniform(-0.5, 0.7)
    return lfilter([1.0 - abs(c)], [1.0, -c], x) if c > 0 else lfilter([1.0, c], [1.0], x)


def synthesize_digit(
    digit: int,
    rng: np.random.Generator,
    sample_rate: int = 8000,
    *,
    speaker: Speaker | None = None,
) -> np.ndarray:
    """One SYNTHETIC spoken ``digit`` as float32 ``(T,)`` in [-1, 1] at ``sample_rate``.

    ``speaker`` fixes the voice; ``None`` draws a random one from ``rng``. Everything else
    (rate, formants, pitch contour, silence, noise, level) is drawn from ``rng``.
    """
    if digit not in DIGITS:
        raise ValueError(f"digit must be 0-9, got {digit!r}")
    if sample_rate < 8000:
        raise ValueError(
            f"sample_rate must be >= 8000 Hz (formants reach 3.5 kHz), got {sample_rate}"
        )
    if speaker is None:
        speaker = random_speaker(rng)
    word = _render_word(digit, rng, speaker, sample_rate)
    lead = round(rng.uniform(0.02, 0.15) * sample_rate)
    tail = round(rng.uniform(0.02, 0.15) * sample_rate)
    clip = _channel(np.concatenate([np.zeros(lead), word, np.zeros(tail)]), rng)
    speech_rms = np.sqrt(np.mean(word**2)) + 1e-12
    snr_db = rng.uniform(*SNR_DB_RANGE)
    clip = clip + _background(clip.size, rng) * speech_rms / 10.0 ** (snr_db / 20.0)
    level = rng.uniform(0.25, 0.9)
    clip = clip * (level / (np.max(np.abs(clip)) + 1e-12))
    return clip.astype(np.float32)


def make_spoken_digits(
    n_per_class: int = 200, seed: int = 0, sample_rate: int = 8000, speakers: int = 6
) -> list[Sample]:
    """``10 * n_per_class`` SYNTHETIC clips, digits interleaved (0, 1, ..., 9, 0, ...).

    Speaker ``k`` of clip ``i`` is ``(i // 10) % speakers``, so every digit gets every
    speaker equally often. Clip ``i`` depends only on ``(seed, i)`` and the speakers, so a
    smaller set is a prefix of a larger one with the same seed and speakers.
    """
    if n_per_class < 0:
        raise ValueError(f"n_per_class must be >= 0, got {n_per_class}")
    voices = make_speakers(speakers, seed)
    samples: list[Sample] = []
    for i in range(n_per_class * len(DIGITS)):
        digit = i % len(DIGITS)
        k = (i // len(DIGITS)) % speakers
        rng = np.random.default_rng([seed, 1, i])
        audio = synthesize_digit(digit, rng, sample_rate, speaker=voices[k])
        samples.append(
            Sample(
                inputs={AUDIO: Waveform(audio, sample_rate)},
                targets={"label": str(digit), "speaker": f"synth{k}"},
                where=f"{NAME}[{i}]",
                meta={"synthetic": True},
            )
        )
    return samples
