"""Deployment: serving (``longmm serve``), export for the edge, compression, distributed runs."""
