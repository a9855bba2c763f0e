"""``python -m longmm.cli ...``: the same as the ``longmm`` command (``torchrun -m longmm.cli``)."""

from longmm.cli import main

main()
