"""``longmm serve RUN_DIR...``: trained runs over HTTP, with a web page (``longmm.deploy.serve``
owns its options and the server)."""

from __future__ import annotations


def main(args: list[str]) -> None:
    from longmm.deploy.serve import main as serve

    serve(args)
