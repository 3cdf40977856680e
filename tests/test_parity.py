"""Folder check and object check agree (issue 13): for random special-token layouts, saving the model, its
generation config and its tokenizer and checking the folder gives exactly the findings of
``check_special_tokens`` on the objects that were saved (the zoo families: tests/test_cli.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
from hypothesis import HealthCheck, given, settings

from pytest_tokenguard.static.api import check_special_tokens
from pytest_tokenguard.static.checks import check_layout
from pytest_tokenguard.static.folder import read_folder
from pytest_tokenguard.suite.strategies import build_layout, special_token_layouts


def _findings(report: Any) -> list[tuple[str, str, str, str]]:
    return sorted((f.code, f.field, f.severity, f.message) for f in report.findings)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(layout=special_token_layouts())
def test_folder_check_equals_object_check(layout: dict[str, Any]) -> None:
    from transformers import GenerationConfig

    model, tokenizer, generation = build_layout(layout)
    model.generation_config = GenerationConfig()
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        # written as the file says, not through save_pretrained, which refuses invalid ids (a folder can hold them)
        (folder / "generation_config.json").unlink()
        if generation is not None:
            generation.to_json_file(folder / "generation_config.json", use_diff=False)
        model.generation_config = generation
        from_folder = check_layout(read_folder(folder).layout)
    from_objects = check_special_tokens(model, tokenizer)
    assert _findings(from_folder) == _findings(from_objects), (str(from_folder), str(from_objects))
