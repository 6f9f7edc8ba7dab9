"""`python -m benchmarks`: what a session costs, against dynalite on loopback.

Five scenario groups, each in its own module: store round trips (`store_rt`), the middleware
called in process (`inprocess`), end to end over HTTP (`e2e`, with `apps` served by uvicorn and
`loadgen` driving it from another process), the session codec (`codec_bench`) and the users
round trips beside a plain create, on a moto of their own (`users_rt`). `report` prints
the tables and writes ``results/latest.{json,md}`` and ``results/latency.png``.
"""
