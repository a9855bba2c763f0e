"""How much each modality drives a multimodal classifier's decisions.

Integrated gradients (Captum) on every floating-point input modality at once: for each
sample, the absolute attributions of a modality's input elements are summed (only its real
frames or tokens, where it has a mask), and the modalities' sums are normalized to shares
that add up to 1. The reported share of a modality is the mean of its per-sample shares.

The baseline is an all-zero input, which for longmm's standardized images and log-mels is
the training split's mean image or spectrogram. The attributed class is the model's
prediction. Integer inputs (token ids) have no gradient and are listed as skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from longmm.evaluation.plots import _save, plt

Forward = Callable[[dict[str, Tensor]], Tensor]


@dataclass
class AttributionResult:
    shares: dict[str, float]  # modality -> mean share of the attribution mass, sum 1
    samples: int  # samples averaged
    steps: int  # integration steps
    skipped: dict[str, str] = field(default_factory=dict)  # modality -> why not attributed
    # Mean |sum of attributions - (F(x) - F(baseline))| relative to |F(x) - F(baseline)|:
    # how well the integral is approximated (small is good).
    relative_delta: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "integrated_gradients",
            "shares": self.shares,
            "samples": self.samples,
            "steps": self.steps,
            "skipped": self.skipped,
            "relative_delta": round(self.relative_delta, 6)
            if math.isfinite(self.relative_delta)
            else None,
        }


def modality_shares(attributions: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
    """Per-sample shares ``(B, M)`` of the absolute attribution mass, in the order of
    ``attributions``. ``masks[m] (B, N)``, when given, keeps the real positions of a modality
    whose last axis is its sequence axis. A sample without any mass gets NaN shares."""
    masses = []
    for m, attr in attributions.items():
        a = attr.detach().abs()
        mask = masks.get(m)
        if mask is not None and mask.shape == (a.shape[0], a.shape[-1]):
            shape = (a.shape[0],) + (1,) * (a.dim() - 2) + (a.shape[-1],)
            a = a * mask.to(a.dtype).view(shape)
        masses.append(a.flatten(1).sum(dim=1))
    mass = torch.stack(masses, dim=1).double()  # (B, M)
    total = mass.sum(dim=1, keepdim=True)
    return torch.where(total > 0, mass / total.clamp_min(1e-300), torch.full_like(mass, math.nan))


def attributable(
    batch: dict[str, Tensor], modalities: list[str], skipped: dict[str, str]
) -> list[str]:
    """The modalities of ``batch`` with an input gradient; why the others are not, in
    ``skipped``."""
    for m in modalities:
        if m not in batch:
            skipped.setdefault(m, "not in the batches")
        elif not batch[m].is_floating_point():
            skipped.setdefault(m, "integer input (token ids): no input gradient")
    return [m for m in modalities if m in batch and batch[m].is_floating_point()]


def modality_attributions(
    forward: Forward,
    batches: Iterable[dict[str, Tensor]],
    modalities: list[str],
    max_samples: int = 256,
    n_steps: int = 32,
    internal_batch_size: int | None = 512,
) -> AttributionResult:
    """Integrated-gradients shares of ``modalities`` over up to ``max_samples`` samples.

    ``forward(batch) -> logits (B, C)`` is the model (in eval mode: dropout would make the
    integral noisy); ``batches`` are prepared batches (normalized, on the model's device).
    """
    from captum.attr import IntegratedGradients

    if max_samples < 1 or n_steps < 1:
        raise ValueError(f"max_samples and n_steps must be >= 1, got {max_samples}, {n_steps}")
    skipped: dict[str, str] = {}
    share_sum: Tensor | None = None
    names: list[str] = []
    counted = 0
    deltas: list[Tensor] = []
    for batch in batches:
        if counted >= max_samples:
            break
        names = attributable(batch, modalities, skipped)
        if not names:
            continue
        b = min(len(batch[names[0]]), max_samples - counted)
        batch = {k: v[:b] if isinstance(v, Tensor) and v.dim() > 0 else v for k, v in batch.items()}
        # Everything else the model reads (masks, token ids) rides along; Captum repeats it
        # for each integration step.
        extra = [k for k, v in batch.items() if k not in names and isinstance(v, Tensor)]
        extra = [k for k in extra if batch[k].dim() > 0 and len(batch[k]) == b]

        def run(*xs: Tensor, _extra: list[str] = extra, _names: list[str] = names) -> Tensor:
            n = len(_names)
            inputs = dict(zip(_names, xs[:n], strict=True))
            inputs.update(zip(_extra, xs[n:], strict=True))
            return forward(inputs)

        inputs = tuple(batch[m].detach() for m in names)
        with torch.inference_mode(False), torch.enable_grad():
            inputs = tuple(x.clone() for x in inputs)
            extras = tuple(batch[k].clone() for k in extra)
            with torch.no_grad():
                target = run(*inputs, *extras).argmax(dim=-1)
            ig = IntegratedGradients(run)
            attrs, delta = ig.attribute(
                inputs,
                baselines=tuple(torch.zeros_like(x) for x in inputs),
                target=target,
                additional_forward_args=extras or None,
                n_steps=n_steps,
                internal_batch_size=internal_batch_size,
                return_convergence_delta=True,
            )
            with torch.no_grad():
                gap = run(*inputs, *extras).gather(1, target[:, None]).squeeze(1) - run(
                    *(torch.zeros_like(x) for x in inputs), *extras
                ).gather(1, target[:, None]).squeeze(1)
        masks = {m: batch[f"{m}_mask"] for m in names if f"{m}_mask" in batch}
        shares = modality_shares(dict(zip(names, attrs, strict=True)), masks)  # (b, M)
        ok = ~shares.isnan().any(dim=1)
        part = shares[ok].sum(dim=0)
        share_sum = part if share_sum is None else share_sum + part
        counted += int(ok.sum())
        deltas.append((delta.detach().abs() / gap.abs().clamp_min(1e-6)).double().cpu())
    if share_sum is None or counted == 0:
        return AttributionResult({}, 0, n_steps, skipped)
    means = (share_sum / counted).tolist()
    return AttributionResult(
        shares={m: round(float(v), 6) for m, v in zip(names, means, strict=True)},
        samples=counted,
        steps=n_steps,
        skipped=skipped,
        relative_delta=float(torch.cat(deltas).median()) if deltas else math.nan,
    )


def plot_attribution(
    shares: dict[str, float], fusion_weights: dict[str, float] | None, path: Path
) -> None:
    """Bars per modality: the integrated-gradients share and, when the fusion has them, its
    mean modality weight."""
    names = sorted(set(shares) | set(fusion_weights or {}))
    xs = range(len(names))
    width = 0.38 if fusion_weights else 0.6
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(names) + 1.5), 3.6))
    ig = [shares.get(m, 0.0) for m in names]
    offset = width / 2 if fusion_weights else 0.0
    ax.bar([x - offset for x in xs], ig, width, label="integrated gradients share")
    if fusion_weights:
        fw = [fusion_weights.get(m, 0.0) for m in names]
        ax.bar([x + offset for x in xs], fw, width, label="fusion weight (mean)")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share (test set mean)")
    ax.set_title("modality attribution")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def attribution_section(
    result: AttributionResult, fusion_weights: dict[str, float] | None, plot: str | None = None
) -> str:
    """A Markdown section for ``report.md``."""
    names = sorted(set(result.shares) | set(fusion_weights or {}))
    lines = [
        "## Modality attribution (test)",
        "",
        f"Integrated gradients (Captum, {result.steps} steps, zero = mean-input baseline, "
        f"predicted class) over {result.samples} test samples: each sample's absolute "
        "attribution mass per modality, as shares of its total, averaged.",
        "",
        "| modality | IG share | fusion weight |",
        "| --- | ---: | ---: |",
    ]
    for m in names:
        ig = result.shares.get(m)
        fw = (fusion_weights or {}).get(m)
        lines.append(
            f"| {m} | {'' if ig is None else f'{ig:.3f}'} | {'' if fw is None else f'{fw:.3f}'} |"
        )
    lines.append("")
    if math.isfinite(result.relative_delta):
        lines += [f"Median relative completeness error: {result.relative_delta:.3g}.", ""]
    for m, why in result.skipped.items():
        lines += [f"- {m}: not attributed ({why})"]
    if result.skipped:
        lines.append("")
    if plot:
        lines += [f"![{plot}]({plot})", ""]
    return "\n".join(lines)
