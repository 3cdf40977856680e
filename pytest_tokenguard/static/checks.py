"""Static checks (TG2xx) of a :class:`TokenLayout`: model config vs generation config vs tokenizer.

Severity follows consequence. **error**: behaviour changes — the installed Trainer rewrites the
value (the tokenizer defines it and a config disagrees), an id cannot be embedded, or generation
does not stop where the chat turn ends. **warning**: a known convention worth seeing (Qwen has no
BOS in its tokenizer, extra stop ids, pad == eos, no pad at all).

Pure Python: no transformers, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_tokenguard.output import columns
from pytest_tokenguard.static.layout import FIELDS, SOURCES, TokenLayout, id_list, is_id, valid_ids


@dataclass(frozen=True)
class StaticCode:
    code: str
    title: str
    severity: str  # "error", "warning", or "error/warning" when it depends on the case
    hint: str


STATIC_CODES: dict[str, StaticCode] = {
    c.code: c
    for c in (
        StaticCode(
            "TG201",
            "model config and tokenizer disagree on a special token",
            "error / warning",
            "align_special_tokens(model, tokenizer) sets the model and generation config from the tokenizer",
        ),
        StaticCode(
            "TG202",
            "generation config and model config disagree",
            "warning",
            "build the generation config with generation_config_for(model, tokenizer)",
        ),
        StaticCode(
            "TG203",
            "generation config and tokenizer disagree on a special token",
            "error",
            "align_special_tokens(model, tokenizer), or generation_config_for(model, tokenizer)",
        ),
        StaticCode(
            "TG204",
            "special token id out of range",
            "error",
            "use an int id in [0, embedding rows); resize embeddings after adding tokens",
        ),
        StaticCode(
            "TG205",
            "tokenizer has more tokens than the model has embedding rows",
            "error",
            "model.resize_token_embeddings(len(tokenizer)) after adding tokens",
        ),
        StaticCode(
            "TG206",
            "pad token is also an eos token",
            "warning / error",
            "add a dedicated pad token, or make sure the collator keeps EOS in the labels and the pad id is not a stop id",
        ),
        StaticCode(
            "TG207",
            "no pad token anywhere",
            "warning",
            "set tokenizer.pad_token (e.g. a dedicated token, or eos with care) and align the configs",
        ),
        StaticCode(
            "TG208",
            "chat end-of-turn token does not stop generation",
            "error",
            "add the end-of-turn id to generation_config.eos_token_id (generation_config_for does)",
        ),
        StaticCode(
            "TG209",
            "a model-config eos does not stop generation",
            "error / warning",
            "generation_config.eos_token_id should contain every model config eos id",
        ),
        StaticCode(
            "TG210",
            "the adapter's embedding rows differ from the base checkpoint's",
            "error",
            "resize the base to the adapter's rows N before PeftModel.from_pretrained (model.resize_token_embeddings(N))",
        ),
        StaticCode(
            "TG211",
            "a decoder-only chat model's tokenizer pads on the right",
            "warning",
            "save the inference tokenizer with padding_side='left' (tokenizer.padding_side = 'left' before "
            "save_pretrained), or pad prompts on the left before batched generate()",
        ),
        StaticCode(
            "TG212",
            "the tokenizer eos is not the chat end of turn (servers stop on the tokenizer eos)",
            "error / warning",
            "set the tokenizer's eos_token to the chat end of turn (tokenizer.eos_token = '<end-of-turn token>') before "
            "saving or converting; keep both ids in generation_config.eos_token_id",
        ),
        StaticCode(
            "TG213",
            "an encoder-decoder without decoder_start_token_id",
            "error / warning",
            "set model.config.decoder_start_token_id (BART: eos 2; T5: pad 0; bert2bert: tokenizer.cls_token_id) and "
            "the generation config's to the same id",
        ),
        StaticCode(
            "TG214",
            "the chat end of turn lies outside the template's generation blocks (assistant-only loss never trains it)",
            "error",
            "put the end of turn inside the assistant's block ({% generation %}...<end of turn>{% endgeneration %}), "
            "e.g. trl.chat_template_utils.get_training_chat_template(tokenizer), or train with assistant_only_loss=False",
        ),
        StaticCode(
            "TG215",
            "the tokenizer no longer adds the bos its model config declares",
            "warning",
            "restore what adds bos: the TemplateProcessing post-processor in tokenizer.json (single: [bos, $A]), or "
            '"add_bos_token": true in tokenizer_config.json for a SentencePiece-only tokenizer (copy the base '
            "checkpoint's tokenizer files); or prepend bos_token in the chat template / training texts. Allow TG215 "
            "where the family starts sequences without bos by design",
        ),
        # TG3xx: what the model sees (sequence checks in sequences.py; TG301/TG302 also predicted statically)
        StaticCode(
            "TG301",
            "doubled BOS at a sequence start",
            "error",
            "the chat template already writes bos: tokenize the rendered text with add_special_tokens=False, or "
            "apply_chat_template(..., tokenize=True)",
        ),
        StaticCode(
            "TG302",
            "a generation prompt ends in eos or the chat end of turn",
            "error",
            "encode prompts with add_special_tokens=False or set tokenizer.add_eos_token = False; for chat, "
            "apply_chat_template(..., add_generation_prompt=True)",
        ),
        StaticCode(
            "TG303",
            "every eos / end-of-turn position is masked in the labels",
            "error",
            'add a dedicated pad token (tokenizer.add_special_tokens({"pad_token": "<|pad|>"}) and '
            "model.resize_token_embeddings(len(tokenizer))), or mask labels by the attention mask, not by the pad id "
            "(DataCollatorForCompletionOnlyLM, trl's DataCollatorForLanguageModeling with completion_only_loss, "
            "DataCollatorWithFlattening)",
        ),
        StaticCode(
            "TG304",
            "training rows without eos / end of turn",
            "error / warning",
            "append tokenizer.eos_token to each training text, or use a chat template that ends turns; check that "
            "max_length truncation does not cut the end off",
        ),
        StaticCode(
            "TG305",
            "padding inside a sequence",
            "error",
            "pad on one side only (tokenizer.pad / DataCollatorWithPadding on unpadded rows); do not concatenate rows "
            "that are already padded; for packing, use DataCollatorWithFlattening",
        ),
        StaticCode(
            "TG306",
            "pad ids attended as content",
            "warning",
            "take the attention mask from tokenizer(..., padding=True) (it is 0 on padding), and keep the pad token "
            "out of training and prompt texts",
        ),
        StaticCode(
            "TG307",
            "ids outside the embedding rows",
            "error",
            "model.resize_token_embeddings(len(tokenizer)) after adding tokens; labels must be -100 or an id the model can embed",
        ),
        StaticCode(
            "TG308",
            "right padding in a batch for decoder-only generate()",
            "error",
            'tokenizer.padding_side = "left" before tokenizing prompts for generate()',
        ),
        StaticCode(
            "TG309",
            "labels on padded positions (attention_mask 0)",
            "error",
            "set labels to -100 wherever attention_mask is 0 (labels[attention_mask == 0] = -100), not a token id: "
            "mask by the attention mask, not by comparing with the pad id (DataCollatorForLanguageModeling does)",
        ),
        StaticCode(
            "TG310",
            "a label is a media placeholder id the processor expands",
            "error",
            "set the placeholder ids to -100 in the labels (labels[labels == image_token_id] = -100, likewise for "
            "video / audio token ids), and -100 on padding, as the models' own collators do",
        ),
        StaticCode(
            "TG311",
            "sequences start without the bos the model was trained with",
            "error / warning",
            "restore the tokenizer's bos (a TemplateProcessing post-processor that prepends it, e.g. the base "
            "checkpoint's tokenizer.json; add_bos_token=True for Llama / Gemma SentencePiece tokenizers), or "
            "prepend tokenizer.bos_token to each text; tokenize with add_special_tokens=True",
        ),
        StaticCode(
            "TG312",
            "a preference completion ends in a doubled eos, or without eos",
            "error",
            "end every chosen / rejected / completion with one eos: trl appends eos to completions that lack it, so "
            "with a tokenizer that appends eos itself (add_eos_token, an eos post-processor) use one that does not, "
            "and leave no whitespace after an eos in the data; conversational rows need a template that closes the turn",
        ),
    )
}
STATIC_CODE_SET = frozenset(STATIC_CODES)


@dataclass
class StaticFinding:
    """One static finding. ``values`` maps a source ("model", "generation", "tokenizer", ...) to its value."""

    code: str
    severity: str
    field: str
    values: dict[str, Any]
    message: str
    hint: str

    @property
    def title(self) -> str:
        return STATIC_CODES[self.code].title

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.code} {self.severity}: {self.message}\n    fix: {self.hint}"


@dataclass
class Report:
    """Findings of one check plus the layout they were computed from (for the table)."""

    layout: TokenLayout
    findings: list[StaticFinding] = field(default_factory=list)

    @property
    def errors(self) -> list[StaticFinding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[StaticFinding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No error-severity findings (warnings do not count unless checked ``strict``)."""
        return not self.errors

    def failing(self, *, strict: bool = False, allow: Iterable[str] = ()) -> list[StaticFinding]:
        allowed = set(allow)
        return [f for f in self.findings if f.code not in allowed and (strict or f.severity == "error")]

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        layout = self.layout
        return {
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "layout": {
                "model_config": layout.model,
                "generation_config": layout.generation,
                "tokenizer": layout.tokenizer,
                "end_of_turn": list(layout.end_of_turn) if layout.end_of_turn else None,
                "vocab_size": layout.vocab_size,
                "embedding_rows": layout.embedding_rows,
                "base_rows": dict(layout.base_rows),
                "adapter_rows": dict(layout.adapter_rows),
                "tokenizer_length": layout.tokenizer_length,
                "notes": list(layout.notes),
            },
        }

    def table(self) -> str:
        layout = self.layout
        present = [name for name in SOURCES if layout.source(name) is not None]
        header = ["", *(SOURCES[name] for name in present)]
        rows = [header]
        for name in FIELDS:
            rows.append([name, *(layout.describe(layout.source(src)[name]) for src in present)])  # type: ignore[index]
        lines = columns(rows)
        turn = layout.describe(layout.end_of_turn[1]) if layout.end_of_turn else "unknown (no chat template)"
        lines.append(f"chat end of turn: {turn}")
        carried = ""
        if layout.adapter_rows:  # a folder check whose adapter carries embedding matrices: say whose rows these are
            base = layout.base_rows.get("input_embeddings")
            carried = f" (the adapter's; base checkpoint {base if base is not None else 'unknown'})"
        sides = ""
        if _two_models(layout):  # the columns above are the decoder's: say so, and what the encoder has
            encoder = (layout.side_vocab_sizes.get("encoder"), layout.side_rows.get("encoder"))
            sides = f" (decoder; encoder: config vocab_size {encoder[0]}, embedding rows {encoder[1]})"
        lines.append(
            f"vocab: config vocab_size {layout.vocab_size}, embedding rows {layout.embedding_rows}{carried}{sides}, "
            f"tokenizer length {layout.tokenizer_length}"
        )
        lines.extend(f"note: {note}" for note in layout.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        parts = [self.table(), ""]
        if not self.findings:
            parts.append("no findings")
        else:
            parts.append(f"{len(self.errors)} error(s), {len(self.warnings)} warning(s):")
            parts.extend(str(f) for f in self.findings)
        return "\n".join(parts)


class TokenAlignmentError(AssertionError):
    """Raised by ``assert_special_tokens_aligned``: the table plus the failing findings."""

    def __init__(self, report: Report, failing: list[StaticFinding]) -> None:
        self.report = report
        self.failing = failing
        lines = [f"special tokens are not aligned: {', '.join(sorted({f.code for f in failing}))}", "", report.table(), ""]
        lines.extend(str(f) for f in failing)
        others = [f for f in report.findings if f not in failing]
        if others:
            lines.append("")
            lines.append("not failing (warnings or allowed):")
            lines.extend(f"  {f.code} {f.severity}: {f.message}" for f in others)
        super().__init__("\n".join(lines))


def _finding(code: str, severity: str, name: str, values: dict[str, Any], message: str, hint: str | None = None) -> StaticFinding:
    return StaticFinding(code, severity, name, values, message, hint or STATIC_CODES[code].hint)


def _assignment(target: str, name: str, value: Any) -> str:
    return f"{target}.{name}_token_id = {value!r}"


def check_layout(layout: TokenLayout) -> Report:
    """Every TG2xx finding of ``layout``, in code order."""
    report = Report(layout)
    found = report.findings
    model, generation, tokenizer = layout.model, layout.generation, layout.tokenizer
    d = layout.describe
    eot_id = layout.end_of_turn[1] if layout.end_of_turn and is_id(layout.end_of_turn[1]) else None

    for name in FIELDS:
        tok = tokenizer[name] if tokenizer is not None else None
        # TG201: the Trainer makes the tokenizer's value authoritative, so a value the tokenizer
        # defines and the config lacks is rewritten at train() (error); a value only the config has
        # is a convention (Qwen: no BOS) that old Trainers erased with None (warning).
        if model is not None and tokenizer is not None:
            cfg = model[name]
            if tok is not None and tok not in id_list(cfg):
                # the Trainer keeps a declared eos list and puts the tokenizer's eos first
                new = [tok, *id_list(cfg)] if name == "eos" and isinstance(cfg, (list, tuple)) else tok
                found.append(
                    _finding(
                        "TG201",
                        "error",
                        name,
                        {"model": cfg, "tokenizer": tok},
                        f"model config {name} {d(cfg)} vs tokenizer {name} {d(tok)}: Trainer.train() rewrites the "
                        f"model config to {new}",
                        f"{_assignment('model.config', name, new)}  (or align_special_tokens(model, tokenizer))",
                    )
                )
            elif tok is None and cfg is not None:
                found.append(
                    _finding(
                        "TG201",
                        "warning",
                        name,
                        {"model": cfg, "tokenizer": None},
                        f"model config {name} {d(cfg)} vs tokenizer {name} None: the tokenizer defines no {name} "
                        f"(transformers 4.56-5.17 Trainers overwrite the config value with None)",
                        f"keep it if the family has no {name} token by design (allow TG201); otherwise set "
                        f"tokenizer.{name}_token",
                    )
                )
        # TG202: generation vs model config, only where the tokenizer does not settle it (else TG201/TG203 say it).
        if model is not None and generation is not None:
            cfg, gen = model[name], generation[name]
            if name == "eos":
                expected = set(valid_ids(cfg)) | set(valid_ids(tok)) | ({eot_id} if eot_id is not None else set())
                # a declared special token in the list is a deliberate stop id (e.g. <|tool_response>: tool calls)
                extra = [v for v in valid_ids(gen) if v not in expected and v not in layout.special_ids]
                if extra:
                    found.append(
                        _finding(
                            "TG202",
                            "warning",
                            name,
                            {"model": cfg, "generation": gen},
                            f"generation eos {d(gen)} also stops on {d(extra)}, which is neither the model config eos "
                            f"{d(cfg)}, the tokenizer eos nor the chat end of turn",
                        )
                    )
            elif tok is None and cfg is not None and gen is not None and id_list(cfg) != id_list(gen):
                found.append(
                    _finding(
                        "TG202",
                        "warning",
                        name,
                        {"model": cfg, "generation": gen},
                        f"generation config {name} {d(gen)} vs model config {name} {d(cfg)}",
                    )
                )
        # TG203: generate() uses the generation config; the Trainer rewrites it to the tokenizer's value.
        if generation is not None and tok is not None and tok not in id_list(generation[name]):
            gen = generation[name]
            # an eos list keeps its stop ids (and the chat end of turn) with the tokenizer's eos added
            new = [tok, *valid_ids(gen)] if name == "eos" and valid_ids(gen) else tok
            found.append(
                _finding(
                    "TG203",
                    "error",
                    name,
                    {"generation": gen, "tokenizer": tok},
                    f"generation config {name} {d(gen)} vs tokenizer {name} {d(tok)}",
                    f"{_assignment('model.generation_config', name, new)}  (or align_special_tokens(model, tokenizer))",
                )
            )

    # TG204: every declared id must be an int the model can embed (a two-model encoder-decoder's decoder: its
    # config holds these ids, and generation and the labels use them there).
    rows = layout.rows
    whose = "the decoder's " if _two_models(layout) else "the "
    for source in SOURCES:
        ids = layout.source(source)
        if ids is None:
            continue
        for name in FIELDS:
            value = ids[name]
            if isinstance(value, (list, tuple)) and not value:
                found.append(
                    _finding(
                        "TG204",
                        "error",
                        name,
                        {source: value},
                        f"{SOURCES[source]} {name} is an empty list: no token ends generation",
                    )
                )
            for item in id_list(value):
                problem = _id_problem(item, rows, whose)
                if problem:
                    found.append(
                        _finding("TG204", "error", name, {source: value}, f"{SOURCES[source]} {name} {d(value)}: {problem}")
                    )
    if layout.end_of_turn is not None:
        problem = _id_problem(layout.end_of_turn[1], rows, whose)
        if problem:
            found.append(
                _finding(
                    "TG204",
                    "error",
                    "end_of_turn",
                    {"chat_template": layout.end_of_turn[1]},
                    f"chat end-of-turn {layout.end_of_turn[0]!r} id {layout.end_of_turn[1]!r}: {problem}",
                )
            )

    # TG205; a two-model encoder-decoder per side: the tokenizer's ids are the encoder's inputs and the decoder's
    # labels, and each side has its own embedding matrix (resized one at a time: EncoderDecoderModel's own
    # resize_token_embeddings raises NotImplementedError)
    length = layout.tokenizer_length
    limits = [("encoder", layout.side_limit("encoder")), ("decoder", rows)] if _two_models(layout) else [("", rows)]
    for side, limit in limits:
        if length is None or limit is None or length <= limit:
            continue
        found.append(
            _finding(
                "TG205",
                "error",
                "vocab",
                {"tokenizer": length, side or "model": limit},
                f"tokenizer has {length} tokens but the {side or 'model'} embeds only {limit} ids "
                f"({length - limit} token ids cannot be embedded" + (f": model.{side} fails on them)" if side else ")"),
                f"model.{side + '.' if side else ''}resize_token_embeddings({length})",
            )
        )

    # TG206: one finding, naming every source where pad is a stop id.
    collisions: dict[str, Any] = {}
    for source in SOURCES:
        ids = layout.source(source)
        if ids is not None and is_id(ids["pad"]) and ids["pad"] in valid_ids(ids["eos"]):
            collisions[source] = {"pad": ids["pad"], "eos": ids["eos"]}
    if collisions:
        where = "; ".join(f"{SOURCES[s]} pad {d(v['pad'])} in eos {d(v['eos'])}" for s, v in collisions.items())
        # An error where nothing else can end a turn: pad is the only stop id and the chat end of turn is that
        # same id, so masking pad in the labels removes every end of turn the model could learn.
        pad = next(iter(collisions.values()))["pad"]
        stop_ids = set(valid_ids((generation or model or {"eos": None})["eos"])) | set(
            valid_ids(tokenizer["eos"] if tokenizer else None)
        )
        only_stop = eot_id == pad and stop_ids <= {pad}  # a base model padding with eos (no template) is a warning
        found.append(
            _finding(
                "TG206",
                "error" if only_stop else "warning",
                "pad",
                collisions,
                f"pad is an eos token ({where}): collators that mask pad in the labels also mask EOS, so the model "
                f"never learns to stop, and a pad id among the generation eos ids ends generation on padding"
                + (
                    f"; {d(pad)} is the only stop id and the chat end of turn, so nothing else can end a turn"
                    if only_stop
                    else ""
                ),
            )
        )

    # TG207
    present = [layout.source(s) for s in SOURCES if layout.source(s) is not None]
    if present and all(ids["pad"] is None for ids in present):  # type: ignore[index]
        found.append(
            _finding(
                "TG207",
                "warning",
                "pad",
                {s: None for s in SOURCES if layout.source(s) is not None},
                "no pad token in the model config, generation config or tokenizer: batched training and generation cannot pad",
            )
        )

    # TG208: generation must stop where a chat turn ends.
    stop_source = "generation" if generation is not None else "model" if model is not None else None
    if eot_id is not None and stop_source is not None:
        stops = layout.source(stop_source)["eos"]  # type: ignore[index]
        if eot_id not in valid_ids(stops):
            found.append(
                _finding(
                    "TG208",
                    "error",
                    "eos",
                    {stop_source: stops, "chat_template": eot_id},
                    f"the chat template ends turns with {d(eot_id)}, which is not among the {SOURCES[stop_source]} eos "
                    f"ids {d(stops)}: generation runs past the end of the turn",
                    f"model.generation_config.eos_token_id = {sorted(set(valid_ids(stops)) | {eot_id})!r}",
                )
            )

    # TG209
    if model is not None and generation is not None:
        # ids the model cannot embed are TG204's; they could never be generated anyway
        missing = [v for v in valid_ids(model["eos"]) if v not in valid_ids(generation["eos"]) and _id_problem(v, rows) is None]
        if missing:
            none_left = not valid_ids(generation["eos"])
            found.append(
                _finding(
                    "TG209",
                    "error" if none_left else "warning",
                    "eos",
                    {"model": model["eos"], "generation": generation["eos"]},
                    f"model config eos {d(missing)} is not among the generation eos ids {d(generation['eos'])}"
                    + (": nothing stops generation but the length limit" if none_left else ""),
                )
            )

    _adapter_rows(layout, found)
    _padding_side(layout, found)
    _serving_stop(layout, found)
    _decoder_start(layout, found)
    _assistant_mask(layout, found)
    _bos_dropped(layout, found)
    _prompt_edges(layout, found)
    found.sort(key=lambda f: f.code)  # stable: per-field order kept within a code
    return report


#: the matrices of ``TokenLayout.base_rows`` / ``adapter_rows``, as messages name them
_MATRICES = {"input_embeddings": "input embeddings", "output_embeddings": "output head"}


def _adapter_rows(layout: TokenLayout, found: list[StaticFinding]) -> None:
    """TG210: an adapter that carries its own embedding matrices (peft ``save_embedding_layers`` after
    ``resize_token_embeddings``, ``modules_to_save``, LoRA on the embeddings) loads only onto a base with the same
    rows; ``PeftModel.from_pretrained`` raises a size mismatch otherwise. A tied base has no output matrix of its
    own: its input embeddings stand in."""
    base, adapter = layout.base_rows, layout.adapter_rows
    order = list(_MATRICES)
    differ: list[tuple[str, int, int]] = []  # (matrix, adapter rows, base rows)
    for name in sorted(adapter, key=lambda n: (order.index(n) if n in order else len(order), n)):
        had = base.get(name, base.get("input_embeddings"))
        if had is not None and had != adapter[name]:
            differ.append((name, adapter[name], had))
    if not differ:
        return
    _, rows, had = differ[0]
    detail = ", ".join(f"{_MATRICES.get(name, name)} {mine} vs {theirs}" for name, mine, theirs in differ)
    found.append(
        _finding(
            "TG210",
            "error",
            "vocab",
            {"adapter": dict(adapter), "base": dict(base)},
            f"the adapter's own embedding matrices have {rows} rows and the base checkpoint's {had} ({detail}): "
            "loading the adapter onto this base (PeftModel.from_pretrained) fails with a size mismatch",
            f"resize the base to {rows} before PeftModel.from_pretrained (model.resize_token_embeddings({rows}))"
            if rows > had
            else f"load the adapter onto the base it was saved from ({rows} rows): shrinking this base to {rows} "
            "(model.resize_token_embeddings) would drop rows its tokenizer may use",
        )
    )


def _padding_side(layout: TokenLayout, found: list[StaticFinding]) -> None:
    """TG211: batched ``generate()`` of a decoder-only model continues each prompt from its last position; with
    right padding the shorter prompts end in pad tokens and the model continues from those (transformers only
    warns, TG113). Flagged for chat models (their template renders an end of turn: served, batched); training
    pads on the right on purpose, so ``--tokenguard-calls`` leaves this out at ``Trainer.train()``."""
    if layout.padding_side != "right" or layout.encoder_decoder or layout.end_of_turn is None:
        return
    found.append(
        _finding(
            "TG211",
            "warning",
            "pad",
            {"padding_side": "right"},
            "the tokenizer pads on the right: batched generate() continues the shorter prompts from pad tokens",
        )
    )


def _serving_stop(layout: TokenLayout, found: list[StaticFinding]) -> None:
    """TG212: vLLM, llama.cpp's GGUF conversion and mlx-lm take the tokenizer's eos as the stop token; a chat
    model whose tokenizer eos is not its end of turn runs past each turn there (a merge or re-save that rewrote
    ``eos_token``). **error** when the generation eos ids do not stop on both (nothing saves it); **warning**
    when they do (transformers and servers that read generation_config.json stop; tools that read only the
    tokenizer do not)."""
    tokenizer, turn = layout.tokenizer, layout.end_of_turn
    if tokenizer is None or turn is None or not is_id(tokenizer["eos"]) or tokenizer["eos"] == turn[1]:
        return
    eos, eot, d = tokenizer["eos"], turn[1], layout.describe
    source = layout.generation if layout.generation is not None else layout.model
    stops = valid_ids(source["eos"]) if source is not None else []
    covered = eos in stops and eot in stops
    where = "generation eos" if layout.generation is not None else "model config eos"
    found.append(
        _finding(
            "TG212",
            "warning" if covered else "error",
            "eos",
            {"tokenizer": eos, "chat_template": eot, "generation" if layout.generation is not None else "model": stops},
            f"tokenizer eos {d(eos)} is not the chat end of turn {d(eot)}: servers that stop on the tokenizer eos "
            + (
                f"alone (a llama.cpp GGUF, mlx-lm without generation_config.json) run past each turn; the {where} "
                f"{d(stops)} stops on both"
                if covered
                else f"(vLLM, llama.cpp, mlx-lm) run past each turn, and the {where} {d(stops)} does not stop on both"
            ),
        )
    )


def _decoder_start(layout: TokenLayout, found: list[StaticFinding]) -> None:
    """TG213: an encoder-decoder's decoder starts from ``decoder_start_token_id``. Training shifts the labels right
    with the model config's (``shift_tokens_right`` raises ``ValueError`` without it) and ``generate()`` starts
    from the generation config's (falling back to its bos). **error** when the model config has none (training
    raises) or generation has nothing to start from; **warning** when the two configs start from different ids."""
    if not layout.encoder_decoder:
        return
    model_start, generation_start = layout.decoder_start.get("model"), layout.decoder_start.get("generation")
    generation_bos = layout.generation["bos"] if layout.generation is not None else None
    values = {"model": model_start, "generation": generation_start}
    if not is_id(model_start):
        found.append(
            _finding(
                "TG213",
                "error",
                "decoder_start",
                values,
                "model config decoder_start_token_id is not set: training an encoder-decoder shifts the labels right "
                "from it (shift_tokens_right raises ValueError)"
                + ("" if is_id(generation_start) or is_id(generation_bos) else ", and generate() has no start id either"),
            )
        )
    elif layout.generation is not None and is_id(generation_start) and generation_start != model_start:
        d = layout.describe
        found.append(
            _finding(
                "TG213",
                "warning",
                "decoder_start",
                values,
                f"generation config decoder_start_token_id {d(generation_start)} vs model config {d(model_start)}: "
                "generate() starts from another id than training taught",
            )
        )


def _assistant_mask(layout: TokenLayout, found: list[StaticFinding]) -> None:
    """TG214: with ``{% generation %}`` blocks, ``apply_chat_template(..., return_assistant_tokens_mask=True)``
    (trl's ``assistant_only_loss=True``) trains only on the tokens inside the blocks. An end of turn written after
    ``{% endgeneration %}`` is never a label: the loss goes down and the model never learns to stop (trl logs
    "The chat template does not include the assistant turn's end-of-turn token in the loss mask")."""
    mask = layout.assistant_mask_end_of_turn
    if mask is None or mask[2]:
        return
    token, token_id, _ = mask
    found.append(
        _finding(
            "TG214",
            "error",
            "end_of_turn",
            {"chat_template": token_id},
            f"the chat template writes the end of turn {token!r} (id {token_id!r}) after the assistant's "
            "{% generation %} block: with assistant_only_loss=True (return_assistant_tokens_mask) it is never in "
            "the labels, so the model never learns to end a turn",
        )
    )


def _bos_dropped(layout: TokenLayout, found: list[StaticFinding]) -> None:
    """TG215: the tokenizer declares a bos equal to the model config's, yet neither its encoding (the
    ``tokenizer.json`` post-processor; ``add_bos_token`` for a SentencePiece-only tokenizer) nor the chat template
    puts it at the start: a re-uploaded or converted tokenizer that lost it, and every sequence starts without the
    bos the model was trained with. Clean where the tokenizer has no bos (Qwen), where its bos is also its eos (a
    document separator: GPT-2 never starts with it), for encoder-decoders, and where it is unknown. A warning: some
    families ship this way on purpose (Phi-3-mini: ``add_bos_token: false``, no bos in the template)."""
    tokenizer, model = layout.tokenizer, layout.model
    if tokenizer is None or model is None or layout.encoder_decoder or layout.adds_bos is not False:
        return
    bos = tokenizer["bos"]
    if not is_id(bos) or bos not in valid_ids(model["bos"]):
        return
    if bos in valid_ids(tokenizer["eos"]) or bos in valid_ids(model["eos"]):
        return
    if layout.has_chat_template and layout.template_starts_with_bos is not False:
        return  # the template writes it (or did not render: unknown)
    encoding = "its encoding (the tokenizer.json post-processor / add_bos_token)"
    where = (
        f"neither {encoding} nor the chat template puts it at the start"
        if layout.has_chat_template
        else f"{encoding} does not add it and there is no chat template"
    )
    found.append(
        _finding(
            "TG215",
            "warning",
            "bos",
            {"model": model["bos"], "tokenizer": bos},
            f"the tokenizer declares bos {layout.describe(bos)}, the model config's bos, yet {where}: every sequence "
            "starts without the bos the model was trained with",
        )
    )


def _prompt_edges(layout: TokenLayout, found: list[StaticFinding]) -> None:
    """TG301 / TG302 predicted from the tokenizer's defaults, before any batch exists: what SFT scripts and
    servers do with the text a chat template renders (``tokenizer(text)``)."""
    tokenizer = layout.tokenizer
    if tokenizer is None:
        return
    d = layout.describe
    bos, eos = tokenizer["bos"], tokenizer["eos"]
    if layout.template_starts_with_bos and layout.adds_bos:
        found.append(
            _finding(
                "TG301",
                "error",
                "bos",
                {"chat_template": bos, "tokenizer": bos},
                f"the chat template writes bos {d(bos)} and the tokenizer adds bos {d(bos)} when it encodes text: "
                "tokenizing the rendered conversation (apply_chat_template(..., tokenize=False), then tokenizer(text)) "
                "starts every example with bos twice",
            )
        )
    if layout.adds_eos and not layout.encoder_decoder:
        found.append(
            _finding(
                "TG302",
                "error",
                "eos",
                {"tokenizer": eos},
                f"the tokenizer appends eos {d(eos)} to every text it encodes (add_eos_token / its post-processor): "
                "every prompt ends with an end of sequence, so generation starts after the end",
            )
        )


def _id_problem(value: Any, rows: int | None, whose: str = "the ") -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"not an int ({type(value).__name__})"
    if value < 0:
        return "negative"
    if rows is not None and value >= rows:
        return f">= {whose}{rows} embedding rows"
    return None


def _two_models(layout: TokenLayout) -> bool:
    """An encoder-decoder made of two models (``TokenLayout.side_vocab_sizes`` / ``side_rows``): its checked
    rows are the decoder's, and the encoder is checked on its own."""
    return bool(layout.side_vocab_sizes or layout.side_rows)
