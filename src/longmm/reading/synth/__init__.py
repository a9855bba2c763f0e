"""Generated tasks: long-context needles (passkey, RULER-style needles, variable tracking,
multimodal needles) in haystacks (:mod:`~longmm.reading.synth.needles`,
:mod:`~longmm.reading.synth.haystack`), and the fact questions the span head trains on
(:mod:`~longmm.reading.synth.facts`)."""

from longmm.reading.synth.haystack import PASSKEY_FILLER, Attachment, TokenCounter
from longmm.reading.synth.needles import (
    TASKS,
    NeedleSample,
    depths_for,
    make_sample,
    make_samples,
    score,
)

__all__ = [
    "PASSKEY_FILLER",
    "TASKS",
    "Attachment",
    "NeedleSample",
    "TokenCounter",
    "depths_for",
    "make_sample",
    "make_samples",
    "score",
]
