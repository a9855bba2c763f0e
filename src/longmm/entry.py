"""The console entry point moved to ``longmm.cli:main``; this name stays for ``longmm`` scripts
installed before the move (``pip install -e .`` writes the new one)."""

from longmm.cli import main

__all__ = ["main"]
