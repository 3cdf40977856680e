"""`make demo`: run the character-chat tests under `pytest --tokenguard` and check the verdicts.

Exit 0 when the demo behaves as documented: the raw Qwen3 layout fails naming TG101 and
pad_token_id 151643, the aligned variant passes; and `tokenguard check` on the raw checkpoint saved to
disk exits 1 naming TG201 (model config pad None vs tokenizer pad 151643), on the aligned one exits 0.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RAW = "test_lora_training_raw_qwen3_layout"
ALIGNED = "test_lora_training_aligned_qwen3_layout"


def main() -> int:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--tokenguard",
        "-p",
        "no:cacheprovider",
        "-rA",
        str(HERE / "test_character_chat.py"),
    ]
    print("$", " ".join(command[2:]), flush=True)
    run = subprocess.run(command, cwd=HERE, capture_output=True, text=True)
    output = run.stdout + run.stderr
    print(output)
    checks = {
        f"{RAW} fails": f"FAILED test_character_chat.py::{RAW}" in output,
        "TG101 is named": "TG101 Trainer rewrote special tokens" in output,
        "pad_token_id 151643 is named": "model.config.pad_token_id = tokenizer.pad_token_id  # 151643" in output,
        f"{ALIGNED} passes": f"PASSED test_character_chat.py::{ALIGNED}" in output,
        "pytest exits 1 (one failure)": run.returncode == 1,
    }
    checks.update(check_saved_checkpoints())
    print("demo checks:")
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'MISSING'}] {name}")
    if all(checks.values()):
        print(
            "demo: the raw Qwen3 layout was caught (TG101 at training, TG201 on the saved checkpoint, "
            "pad_token_id 151643); the aligned variant is clean."
        )
        return 0
    print("demo: the guard did not behave as documented", file=sys.stderr)
    return 1


def check_saved_checkpoints() -> dict[str, bool]:
    """Save the raw and the aligned tiny Qwen3 checkpoints and run the folder CLI on both."""
    from pytest_tokenguard import align_special_tokens
    from pytest_tokenguard.suite import zoo

    results: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("raw", "aligned"):
            model, tokenizer = zoo.build("qwen3-0.6b")
            if name == "aligned":
                align_special_tokens(model, tokenizer)
            folder = Path(tmp) / f"qwen3-{name}"
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            command = [sys.executable, "-m", "pytest_tokenguard", "check", str(folder)]
            print("$ tokenguard check", folder.name, flush=True)
            run = subprocess.run(command, capture_output=True, text=True)
            print(run.stdout + run.stderr)
            if name == "raw":
                results["tokenguard check exits 1 on the raw checkpoint"] = run.returncode == 1
                results["TG201 pad None vs 151643 is named"] = (
                    "TG201 error: model config pad None vs tokenizer pad 151643" in run.stdout
                )
            else:
                results["tokenguard check exits 0 on the aligned checkpoint"] = run.returncode == 0
    return results


if __name__ == "__main__":
    sys.exit(main())
