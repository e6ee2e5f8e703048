"""One walker that makes results JSON-safe (strict JSON has no NaN or Infinity, and no numpy scalars)."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def json_safe(obj, infinity: Optional[float] = None, skip_private: bool = False):
    """Recursively: NaN -> None, +-inf -> +-`infinity` (None when not given), numpy scalars -> Python numbers,
    tuples -> lists; with `skip_private`, dict keys starting with '_' are dropped."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        obj = float(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        if math.isnan(obj) or infinity is None:
            return None
        return infinity if obj > 0 else -infinity
    if isinstance(obj, dict):
        return {k: json_safe(v, infinity, skip_private) for k, v in obj.items()
                if not (skip_private and str(k).startswith("_"))}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, infinity, skip_private) for v in obj]
    return obj
