"""Benchmarks (issue 5): how close the app comes to one HTTP round trip to APIM.

Run `python -m benchmarks [--quick] [--out results.json]`. Everything runs on
this machine against the devstack, which runs in its own process (`python -m
devstack up`) so that the stand-ins never share a GIL with what is measured.
Each measurement runs in a fresh child process of its own:

    calls      floor, this app, the naive baseline and the lean reference, interleaved (sequential and c=64)
    storm      1000 concurrent invocations on a cold process; token requests counted at the stand-in
    coldstart  process start to `import function_app` done, against a dependency-only floor
    memory     RSS growth over 10,000 invocations

Development tooling: `.funcignore` keeps this package out of the deployed app.
"""
