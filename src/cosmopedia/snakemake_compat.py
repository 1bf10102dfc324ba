"""The one place the workflow relies on a Snakemake internal, kept for planning speed.

Snakemake reads the signature of a rule's input or param function (inspect.signature)
several times per job unless it is given once: 0.3 M instructions per function and shard
when planning (bench/dag.py). `snakemake.common.overwrite_function_params` gives it once.
It is undocumented, so tests/test_settings.py checks that Snakemake still reads it; if a
release changes it, that test fails and `cache_signature` can become a no-op.
"""

from __future__ import annotations

import inspect


def cache_signature(func):
    """Mark an input or param function that Snakemake calls for every shard's job."""
    from snakemake.common import overwrite_function_params

    overwrite_function_params(func, inspect.signature(func).parameters)
    return func
