"""Deprecated: the analyses that lived here now have one module each. Import from those instead:

    mechscope.inspection    describe, module_tree, param_counts, site_table   (mechscope inspect)
    mechscope.tokenization  tokenize_table                                     (mechscope tokenize)
    mechscope.generation    chat_prompt, generate                              (mechscope generate)
    mechscope.next_token    next_token_table, top_tokens                       (mechscope next-token)

This module re-exports them for one release so that old imports keep working.
"""
from __future__ import annotations

import warnings

from .generation import chat_prompt, generate  # noqa: F401
from .inspection import CONFIG_DOC, describe, module_tree, param_counts, site_table  # noqa: F401
from .next_token import next_token_table, top_tokens  # noqa: F401
from .tokenization import tokenize_table  # noqa: F401

warnings.warn("mechscope.analysis is deprecated: import from mechscope.inspection, mechscope.tokenization, "
              "mechscope.generation or mechscope.next_token (or from mechscope itself).", DeprecationWarning,
              stacklevel=2)
