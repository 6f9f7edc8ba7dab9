"""Runnable examples: ``python -m examples.serve [APP]`` (``make example APP=...``)."""
