"""`make demo`: run the character-chat tests under `pytest --tokenguard` and check the verdicts.

Exit 0 when the demo behaves as documented: the raw Qwen3 layout fails naming TG101 and
pad_token_id 151643, the aligned variant passes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RAW = "test_lora_training_raw_qwen3_layout"
ALIGNED = "test_lora_training_aligned_qwen3_layout"


def main() -> int:
    command = [sys.executable, "-m", "pytest", "--tokenguard", "-p", "no:cacheprovider", "-rA",
               str(HERE / "test_character_chat.py")]
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
    print("demo checks:")
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'MISSING'}] {name}")
    if all(checks.values()):
        print("demo: the raw Qwen3 layout was caught (TG101, pad_token_id 151643); the aligned variant is clean.")
        return 0
    print("demo: the guard did not behave as documented", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
