"""Find the token a chat template ends an assistant turn with.

The template is rendered for one user/assistant exchange in jinja2's immutable sandbox (as
transformers renders it, with no access to Python objects), and the special token that
immediately follows the assistant's text is the end of turn. Used identically for live
tokenizers and for checkpoint folders.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

_REPLY = "TOKENGUARD_ASSISTANT_REPLY"
_MESSAGES = [{"role": "user", "content": "TOKENGUARD_USER_TURN"}, {"role": "assistant", "content": _REPLY}]
#: the same exchange with content as a list of parts, as multimodal processors' templates expect (Idefics3, LLaVA,
#: Qwen2-VL, Gemma-3 render nothing, or fail, for string content)
_PARTS_MESSAGES = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in _MESSAGES]
#: the exchange followed by another user turn, as trl's ``is_chat_template_stop_token_trained`` probes the assistant
#: mask: some templates close the last assistant turn differently (or not at all); the end of an assistant turn is
#: where the next message begins
_MASK_MESSAGES = [*_MESSAGES, {"role": "user", "content": "TOKENGUARD_NEXT_TURN"}]
_MASK_PARTS_MESSAGES = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in _MASK_MESSAGES]
#: a ``{% generation %}`` tag (any whitespace control): only templates with one are rendered a second time
_GENERATION_TAG = re.compile(r"\{%[-+]?\s*generation\s*[-+]?%\}")
#: while a tracked render runs: the blocks rendered so far and the ``(start, end)`` character spans of the
#: ``{% generation %}`` blocks, as transformers' AssistantTracker records them (``chat_template_utils.py``)
_TRACKING: contextvars.ContextVar[tuple[list[str], list[tuple[int, int]]] | None] = contextvars.ContextVar(
    "tokenguard_generation_spans", default=None
)


def pick_template(template: Any) -> str | None:
    """A template string, or the ``default`` one of a named set (list of {name, template} or dict)."""
    if isinstance(template, str):
        return template
    if isinstance(template, Mapping):
        chosen = template.get("default")
        return chosen if isinstance(chosen, str) else None
    if isinstance(template, list):
        for entry in template:
            if isinstance(entry, Mapping) and entry.get("name") == "default" and isinstance(entry.get("template"), str):
                return str(entry["template"])
    return None


@functools.lru_cache(maxsize=32)
def _compile(template: str) -> Any:
    """Compiled once per template text: checks run many times per session on the same tokenizer."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Generation(jinja2.ext.Extension):
        # ``{% generation %}`` marks assistant text for masks: rendered plainly, and during a tracked render
        # (``_render_tracked``) its character span is recorded as transformers' AssistantTracker does: the start
        # is the length of everything ``generate()`` has yielded so far, the end adds the block's own length.
        tags = frozenset({"generation"})  # type: ignore[assignment]

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            rendered = str(caller())
            tracking = _TRACKING.get()
            if tracking is not None:
                blocks, spans = tracking
                start = len("".join(blocks))
                spans.append((start, start + len(rendered)))
            return rendered

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: "2026-01-01"
    return env.from_string(template)


def _render(template: str, variables: Mapping[str, Any]) -> str:
    """The probe exchange rendered with string content, or, where that does not show the reply (a template that
    iterates over content parts), with content parts. Raises what rendering the first form raised when neither
    form shows the reply."""
    compiled = _compile(template)
    try:
        rendered = str(compiled.render(messages=_MESSAGES, add_generation_prompt=False, **variables))
    except Exception:
        rendered, error = "", True
    else:
        error = False
    if _REPLY in rendered:
        return rendered
    try:
        parts = str(compiled.render(messages=_PARTS_MESSAGES, add_generation_prompt=False, **variables))
    except Exception:
        parts = ""
    if _REPLY in parts or not error:
        return parts if _REPLY in parts else rendered
    return str(compiled.render(messages=_MESSAGES, add_generation_prompt=False, **variables))  # raises again


def end_of_turn(
    template: Any, special_tokens: Mapping[str, int], variables: Mapping[str, Any]
) -> tuple[tuple[str, int] | None, str | None]:
    """``((token, id), None)``, or ``(None, note)`` saying why the end of turn is unknown.

    ``special_tokens`` maps token strings to ids (added tokens and named specials); ``variables``
    are the template's ``bos_token``/``eos_token``/... strings.
    """
    text = pick_template(template)
    if text is None:
        return None, "chat template not checked: no default template"
    try:
        rendered = _render(text, {k: v for k, v in variables.items() if v is not None})
    except ImportError:
        return None, "chat template not checked: jinja2 is not installed"
    except Exception as exc:  # a template may reject our probe conversation; say so, do not fail the check
        return None, f"chat template not checked: rendering failed ({type(exc).__name__}: {exc})"
    position = rendered.find(_REPLY)
    if position < 0:
        return None, "chat template not checked: the assistant message is not rendered"
    tail = rendered[position + len(_REPLY) :].lstrip()
    matches = [token for token in special_tokens if token and tail.startswith(token)]
    if not matches:
        return None, "chat template ends assistant turns without a special token"
    token = max(matches, key=len)
    return (token, special_tokens[token]), None


def starts_with_token(template: Any, variables: Mapping[str, Any], token: str | None) -> bool | None:
    """Whether the conversation the template renders (one user/assistant exchange) begins with ``token``
    (e.g. the bos string, as templates that write ``{{ bos_token }}`` do). None when unknown: no token, no
    default template, or the template fails to render."""
    text = pick_template(template)
    if not token or text is None:
        return None
    try:
        rendered = _render(text, {k: v for k, v in variables.items() if v is not None})
    except Exception:  # the end-of-turn note already says why a template does not render
        return None
    return rendered.startswith(token)


def has_generation_blocks(template: Any) -> bool:
    """Whether the (default) template marks assistant text with ``{% generation %}`` (``return_assistant_tokens_mask``,
    trl's ``assistant_only_loss``). A text search: templates without the tag are never rendered again."""
    text = pick_template(template)
    return text is not None and "generation" in text and _GENERATION_TAG.search(text) is not None


def _render_tracked(
    template: str, messages: list[dict[str, Any]], variables: Mapping[str, Any]
) -> tuple[str, list[tuple[int, int]]]:
    """The conversation rendered through ``generate()`` block by block, with the character spans of the
    ``{% generation %}`` blocks (transformers ``_render_with_assistant_indices``)."""
    compiled = _compile(template)
    blocks: list[str] = []
    spans: list[tuple[int, int]] = []
    token = _TRACKING.set((blocks, spans))
    try:
        for block in compiled.generate(messages=messages, add_generation_prompt=False, **variables):
            blocks.append(block)
    finally:
        _TRACKING.reset(token)
    return "".join(blocks), spans


def assistant_mask_end_of_turn(
    template: Any, special_tokens: Mapping[str, int], variables: Mapping[str, Any]
) -> tuple[tuple[str, int, bool] | None, str | None]:
    """For a template with ``{% generation %}`` blocks: the special token the template writes after an assistant
    reply (whitespace skipped) in a user/assistant/user conversation, and whether it lies inside the assistant mask,
    as ``((token, id, inside), None)``. A token is inside when its characters overlap a generation span, the rule
    transformers applies to token offsets (``apply_chat_template(..., return_assistant_tokens_mask=True)``).
    ``(None, None)`` for a template without generation blocks (nothing is rendered); ``(None, note)`` when it
    cannot be told."""
    text = pick_template(template)
    if text is None or not has_generation_blocks(text):
        return None, None
    given = {k: v for k, v in variables.items() if v is not None}
    rendered, failure = "", None
    spans: list[tuple[int, int]] = []
    # string content, then (a template that iterates over content parts, or fails on strings) content parts
    for messages in (_MASK_MESSAGES, _MASK_PARTS_MESSAGES):
        try:
            rendered, spans = _render_tracked(text, messages, given)
        except ImportError:
            return None, "assistant mask not checked: jinja2 is not installed"
        except Exception as exc:  # a template may reject the probe conversation: say so, do not fail the check
            failure = failure or f"assistant mask not checked: rendering failed ({type(exc).__name__}: {exc})"
            continue
        if _REPLY in rendered:
            break
    else:
        return None, failure or "assistant mask not checked: the assistant message is not rendered"
    position = rendered.find(_REPLY)
    after = rendered[position + len(_REPLY) :]
    start = position + len(_REPLY) + len(after) - len(after.lstrip())
    matches = [token for token in special_tokens if token and rendered.startswith(token, start)]
    if not matches:
        return None, "assistant mask not checked: no special token follows the assistant reply"
    token = max(matches, key=len)
    end = start + len(token)
    inside = any(span_start < end and start < span_end for span_start, span_end in spans)
    return (token, special_tokens[token], inside), None
