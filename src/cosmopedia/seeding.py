"""Seeds derived from names, never from global state or hash randomisation.

Every random choice in the workflow is made by a `random.Random(derive_seed(...))` whose
seed comes from stable strings (e.g. the dataset version and a row id), so reruns, job
order and PYTHONHASHSEED never change a result.
"""

from __future__ import annotations

import hashlib
import random

# Seeds stay below 2**63 so they fit signed 64-bit columns and TGI's u64 `seed` parameter.
SEED_BITS = 63
SCHEME = "sha256(part_0 NUL part_1 ...)[:8] big-endian >> 1"


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the given parts (joined with NUL, hashed with SHA-256)."""
    payload = "\0".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") >> (64 - SEED_BITS)


def rng_for(*parts: object) -> random.Random:
    return random.Random(derive_seed(*parts))
