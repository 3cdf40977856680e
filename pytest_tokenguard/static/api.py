"""Static checks on live objects: ``check_special_tokens`` and ``assert_special_tokens_aligned``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pytest_tokenguard.guard.allowlist import split_codes
from pytest_tokenguard.static.checks import Report, TokenAlignmentError, check_layout
from pytest_tokenguard.static.objects import layout_from_objects


def check_special_tokens(model_or_config: Any, tokenizer: Any = None, generation_config: Any = None) -> Report:
    """Check bos/eos/pad across model config, generation config (default: the model's) and tokenizer.

    ``model_or_config``: a ``PreTrainedModel``, a peft ``PeftModel`` (its base model is checked) or a
    config (then the vocabulary size stands in for the embedding rows); ``tokenizer``: a tokenizer (fast or
    slow), a processor carrying one, or None. Values are read from the objects as transformers exposes them
    (``config.<name>_token_id``, ``tokenizer.<name>_token_id``, ``get_input_embeddings().weight.shape[0]``,
    ``tokenizer.chat_template``). Returns a :class:`Report` (``findings``, ``errors``, ``warnings``, ``ok``,
    ``to_dict()``, ``str()`` = the table); raises nothing for misaligned layouts.
    """
    return check_layout(layout_from_objects(model_or_config, tokenizer, generation_config))


def assert_special_tokens_aligned(
    model: Any,
    tokenizer: Any = None,
    generation_config: Any = None,
    *,
    allow: Iterable[str] = (),
    strict: bool = False,
) -> Report:
    """:func:`check_special_tokens`, then raise :class:`TokenAlignmentError` (an ``AssertionError``: the table
    and the failing findings) on error findings, and warnings too with ``strict``, whose code is not in
    ``allow``. Returns the report when nothing fails. Raises ``ValueError`` for an unknown code in ``allow``.
    """
    codes = split_codes(list(allow), "allow")
    report = check_special_tokens(model, tokenizer, generation_config)
    failing = report.failing(strict=strict, allow=codes)
    if failing:
        raise TokenAlignmentError(report, failing)
    return report
