"""Benchmarks: what the app costs the user per call, on a cold start and in memory.

Run `python -m benchmarks [--quick] [--out results.json]`; benchmarks/README.md has
the method. Everything runs on this machine against the devstack, which runs in
its own process (`python -m devstack up --tls`) so that the stand-ins never
share a GIL with what is measured. Each measurement runs in a fresh child
process of its own:

    instructions  instructions per call under callgrind, floor and app, in both sampling regimes
    calls         steady-state counts, client CPU and latency on loopback and over a modelled network
    storm         1000 concurrent invocations on a cold process; token requests counted at the stand-in
    memory        RSS after 1,000 calls above the dependency floor, and growth over 10,000 more
    coldstart     process start to the first answer, against the same dependencies doing it raw

Development tooling: `.funcignore` keeps this package out of the deployed app.
"""
