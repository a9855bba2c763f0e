"""What a multi-process run (DDP/FSDP through Lightning, ``torchrun`` or Lightning's own
launcher) needs beyond the Trainer: predictions written per rank and merged in input order,
and a final evaluation that sees every sample exactly once.

Both use the run folder, so on several machines it must be on a shared filesystem (as the
checkpoints must be anyway).
"""

from __future__ import annotations

import heapq
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from longmm.errors import LongmmError
from longmm.io import atomic_write_text, atomic_write_with


def shard_path(parts: Path, rank: int, world_size: int) -> Path:
    return parts / f"rank{rank:05d}-of-{world_size:05d}.jsonl"


def _indexed(fh: TextIO) -> Iterator[tuple[int, str]]:
    for line in fh:
        if line.strip():
            yield json.loads(line)["index"], line


def merge_shards(shards: Sequence[Path], out: Path) -> int:
    """Merge per-rank JSONL shards (each sorted by ``index``) into ``out`` in input order,
    streaming; an index seen twice (a distributed sampler's padding repeats samples so that
    every rank gets as many) is written once. Returns the rows written."""
    handles = [open(s, encoding="utf-8") for s in shards]  # noqa: SIM115
    written = 0

    def write(fh: Any) -> None:
        nonlocal written
        last = None
        for index, line in heapq.merge(*(_indexed(h) for h in handles), key=lambda t: t[0]):
            if index == last:
                continue
            fh.write(line.encode("utf-8"))
            last = index
            written += 1

    try:
        atomic_write_with(out, write)
    finally:
        for h in handles:
            h.close()
    return written


def gather_predictions(rows: list[dict[str, Any]], out: Path, trainer: Any) -> int:
    """Each rank writes its rows to ``<out stem>.parts/rank<r>-of-<w>.jsonl``; after a
    barrier rank 0 merges them into ``out`` in input order and removes the shards. Returns
    the rows in ``out`` on rank 0, 0 elsewhere."""
    if any("index" not in r for r in rows):
        raise LongmmError(
            "distributed predict needs an 'index' in every batch (the sample's position) to "
            "merge the ranks' predictions in input order"
        )
    rank, world = trainer.global_rank, trainer.world_size
    parts = out.parent / f"{out.stem}.parts"
    text = "".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["index"]))
    atomic_write_text(shard_path(parts, rank, world), text)
    trainer.strategy.barrier("longmm-predictions-written")
    written = 0
    if trainer.is_global_zero:
        shards = [shard_path(parts, r, world) for r in range(world)]
        missing = [str(s) for s in shards if not s.is_file()]
        if missing:
            raise LongmmError(
                f"prediction shards missing: {missing} (is the run folder on a filesystem "
                "every node shares?)"
            )
        written = merge_shards(shards, out)
        shutil.rmtree(parts, ignore_errors=True)
    trainer.strategy.barrier("longmm-predictions-merged")
    return written


def leave_process_group() -> None:
    """End this process's part in the distributed group (after a barrier), so that what
    follows runs in each process alone: no collective waits for ranks that have left."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def single_device_trainer(trainer: Any, plugins: list[Any] | None = None) -> Any:
    """A Trainer for evaluation on this rank's device alone (no logger, no checkpoints)."""
    from lightning.pytorch import Trainer

    device = trainer.strategy.root_device
    accelerator = "cpu" if device.type == "cpu" else device.type
    devices: Any = 1 if device.index is None else [device.index]
    return Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy="auto",
        num_nodes=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision=trainer.precision,
        plugins=plugins or [],
    )
