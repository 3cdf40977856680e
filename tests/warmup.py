"""Modules the pytester stories' inner tests import, imported by the outer test module first.

pytester's in-process runs drop the modules first imported inside them when they end; transformers' lazy model
modules dropped that way break every later use in the worker (``KeyError: 'transformers.models.qwen3.modeling_qwen3'``),
so a test module whose stories build models imports their modules at collection, outside pytester.
"""

from __future__ import annotations

import contextlib
import importlib

#: the architectures the stories of tests/test_cases_sequences.py, test_preference_batches.py and
#: test_trl_messages.py build (Qwen3 needs transformers >= 4.51: skipped where absent)
MODEL_MODULES = tuple(f"transformers.models.{name}.modeling_{name}" for name in ("qwen3", "qwen2", "llama", "gemma", "mistral"))


def import_model_modules() -> None:
    for name in MODEL_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
