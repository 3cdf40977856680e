"""Folder check and object check agree (issue 13): for random special-token layouts, saving the checkpoint and
checking the folder gives exactly the findings of ``check_special_tokens`` on the objects that were saved (for an
adapter: on what a user loads from the two folders).

Drawn kinds (``pytest_tokenguard.suite.strategies``): plain causal LMs; T5/BART encoder-decoders
(``decoder_start_token_id``); a multimodal model whose tokenizer sits inside a processor with its own
content-parts chat template (the object side is the processor); peft LoRA adapters over the base, LoRA only or
carrying their own embedding rows, with or without a tokenizer beside them. The zoo families:
tests/test_cli.py (``test_cli_agrees_with_object_api``)."""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pytest_tokenguard.static.api import check_special_tokens
from pytest_tokenguard.static.checks import check_layout
from pytest_tokenguard.static.folder import read_folder
from pytest_tokenguard.suite.strategies import ADAPTER_EMBEDDINGS, build_layout, special_token_layouts, train_adapter

peft: Any
try:
    import peft
except ImportError:  # only the adapter draws need it
    peft = None

INPUT, OUTPUT = "input_embeddings", "output_embeddings"
Finding = tuple[str, str, str, str]


def _findings(report: Any) -> list[Finding]:
    return sorted((f.code, f.field, f.severity, f.message) for f in report.findings)


def _save(model: Any, tokenizer: Any, generation: Any, folder: Path) -> None:
    """``model``, its tokenizer (or processor) and ``generation`` as the folder's generation_config.json (None: no
    such file)."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # written as the file says, not through save_pretrained, which refuses invalid ids (a folder can hold them)
    (folder / "generation_config.json").unlink()
    if generation is not None:
        generation.to_json_file(folder / "generation_config.json", use_diff=False)
    model.generation_config = generation


def _folder_equals_objects(layout: dict[str, Any]) -> None:
    if layout["kind"] == "encoder_decoder":
        event(layout["architecture"])
    elif layout["kind"] == "processor":
        own = layout["processor"]["tokenizer_end_of_turn"] is not None
        event(f"processor template: {layout['tokenizer']['end_of_turn'] is not None}, tokenizer template: {own}")
    model, tokenizer, generation = build_layout(layout)
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        _save(model, tokenizer, generation, folder)
        from_folder = check_layout(read_folder(folder).layout)
    from_objects = check_special_tokens(model, tokenizer)
    assert _findings(from_folder) == _findings(from_objects), (str(from_folder), str(from_objects))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(layout=special_token_layouts())
def test_folder_check_equals_object_check(layout: dict[str, Any]) -> None:
    _folder_equals_objects(layout)


#: a processor whose own chat template (chat_template.jinja beside its tokenizer) ends turns with a token that
#: stops nothing: the object check used to read only the inner tokenizer's template (none) and missed TG208
PROCESSOR_TEMPLATE = {
    "kind": "processor",
    "rows": 12,
    "tokenizer": {"bos": None, "eos": None, "pad": None, "length": 13, "end_of_turn": 0},
    "model": {"bos": None, "eos": None, "pad": None},
    "generation": {"bos": None, "eos": None, "pad": None},
    "processor": {"tokenizer_end_of_turn": None},
}


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(layout=special_token_layouts(kinds=("encoder_decoder",)))
def test_encoder_decoders(layout: dict[str, Any]) -> None:
    _folder_equals_objects(layout)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(layout=special_token_layouts(kinds=("processor",)))
@example(layout=PROCESSOR_TEMPLATE)
def test_processors(layout: dict[str, Any]) -> None:
    _folder_equals_objects(layout)


def _load_adapter(base: Any, adapter: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes on resized and tied embeddings
        return peft.PeftModel.from_pretrained(base, adapter)


def _resized(model: Any, rows: int | None) -> Any:
    """A copy of ``model`` with ``rows`` embedding rows (None or its own: an unchanged copy)."""
    model = copy.deepcopy(model)
    if rows is not None and rows != model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(rows, mean_resizing=False)
    return model


def _adapter_kind(kind: str) -> Any:
    """``kind`` as a parameter, skipped with the reason where the installed peft cannot save it."""
    if peft is None:
        return pytest.param(kind, marks=pytest.mark.skip(reason="peft is not installed"))
    # trainable-token deltas (``LoraConfig(trainable_token_indices=...)``) arrived in peft 0.15
    if kind == "trainable_tokens" and "trainable_token_indices" not in {f.name for f in dataclasses.fields(peft.LoraConfig)}:
        return pytest.param(
            kind, marks=pytest.mark.skip(reason=f"peft {peft.__version__} has no trainable_token_indices (>= 0.15)")
        )
    return kind


ADAPTER_KINDS = [_adapter_kind(kind) for kind in ADAPTER_EMBEDDINGS]


@pytest.mark.parametrize("embeddings", ADAPTER_KINDS)
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_adapter_folder_check_equals_the_loaded_peft_model(embeddings: str, data: st.DataObject) -> None:
    """Base folder + adapter folder (``read_folder(base, adapter=...)``) against ``check_special_tokens`` on what a
    user loads: the base as saved, resized to the rows the adapter carries, ``PeftModel.from_pretrained``, and the
    tokenizer beside the adapter (else the base's). The one finding only the folder can make is TG210 (the saved
    base does not fit the adapter: loading it as saved fails); it is there exactly when the rows differ, which is
    exactly when loading the saved base as it is fails with a size mismatch."""
    layout = data.draw(special_token_layouts(kinds=("adapter",), adapter_embeddings=(embeddings,)), label="layout")
    model, tokenizer, generation = build_layout(layout)
    adapter = train_adapter(layout, model, tokenizer)
    options = layout["adapter"]
    carried = adapter.carried_rows
    base = _resized(model, carried) if options["base_resized"] else model
    base_rows = base.get_input_embeddings().weight.shape[0]
    with tempfile.TemporaryDirectory() as directory:
        base_dir, adapter_dir = Path(directory) / "base", Path(directory) / "adapter"
        _save(base, tokenizer, generation, base_dir)
        adapter.peft_model.save_pretrained(adapter_dir, **adapter.save)
        if options["tokenizer_beside"]:
            adapter.tokenizer.save_pretrained(adapter_dir)
        read = read_folder(base_dir, adapter=adapter_dir)
        try:  # what TG210 predicts: the saved base as it is cannot take the adapter
            _load_adapter(copy.deepcopy(base), adapter_dir)
            loads_as_saved = True
        except RuntimeError as exc:
            assert "size mismatch" in str(exc), exc
            loads_as_saved = False
        loaded = _resized(base, carried)
        loaded.generation_config = generation
        peft_model = _load_adapter(loaded, adapter_dir)
    from_folder = check_layout(read.layout)
    from_objects = check_special_tokens(peft_model, adapter.tokenizer if options["tokenizer_beside"] else tokenizer)

    assert read.layout.base_rows == {INPUT: base_rows, OUTPUT: base_rows}  # an untied Llama saves both
    if carried is None:
        assert read.layout.adapter_rows == {}
    else:
        assert set(read.layout.adapter_rows.values()) == {carried} and INPUT in read.layout.adapter_rows
    misfit = carried is not None and carried != base_rows
    event(f"{'TG210' if misfit else 'fits'}, tokenizer {'beside the adapter' if options['tokenizer_beside'] else 'of the base'}")
    tg210 = [f for f in _findings(from_folder) if f[0] == "TG210"]
    assert [(code, field, severity) for code, field, severity, _ in tg210] == ([("TG210", "vocab", "error")] if misfit else [])
    assert loads_as_saved is not misfit
    rest = [f for f in _findings(from_folder) if f[0] != "TG210"]
    assert rest == _findings(from_objects), (str(from_folder), str(from_objects))
