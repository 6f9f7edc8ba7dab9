"""`python -m benchmarks`: what a session costs, against dynalite on loopback.

Four scenario groups, each in its own module: store round trips (`store_rt`), the middleware
called in process (`inprocess`), end to end over HTTP (`e2e`, with `apps` served by uvicorn and
`loadgen` driving it from another process) and the session codec (`codec_bench`). `report` prints
the tables and writes ``results/latest.{json,md}`` and ``results/latency.png``.
"""
