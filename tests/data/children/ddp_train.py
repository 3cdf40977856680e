"""Child script: a 2-step DDP (CPU, gloo) Trainer run of the zoo's tiny Qwen3 model.

Meant for ``torchrun --nproc_per_node=2 ddp_train.py [misaligned|aligned]`` (or ``accelerate launch``):
``misaligned`` keeps the Qwen3 layout as built (model config pad None, tokenizer pad 151643), so the
Trainer aligns the configs and logs "Updated tokens: {...}" on every rank (``log_level_replica`` is
"warning"); ``aligned`` aligns them beforehand with ``align_special_tokens``, then applies what
``predict_trainer_alignment`` says the installed Trainer would still change (4.56-5.17 also copy the
tokenizer's None over bos), so the Trainer logs nothing.
Each rank ends with ``RANK=<rank> DONE``. tests/test_distributed.py runs it from guarded tests.
"""

from __future__ import annotations

import os
import sys
import tempfile


def say(line: str) -> None:
    """One write per line: workers run unbuffered (``python -u``) and share the launcher's stdout."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "misaligned"
    if mode not in ("misaligned", "aligned"):
        print(f"usage: ddp_train.py [misaligned|aligned], not {mode!r}", file=sys.stderr)
        return 2
    rank = os.environ.get("RANK", "0")

    from pytest_tokenguard import align_special_tokens, predict_trainer_alignment
    from pytest_tokenguard.suite import zoo

    model, tokenizer = zoo.build("qwen3-0.6b")
    if mode == "aligned":
        say(f"RANK={rank} ALIGNED {align_special_tokens(model, tokenizer)}")
        for field, value in predict_trainer_alignment(model, tokenizer).items():
            setattr(model.config, field, value)
            setattr(model.generation_config, field, value)
    with tempfile.TemporaryDirectory(prefix="ddp_train_") as output_dir:
        zoo.lora_train(
            model,
            tokenizer,
            output_dir,
            steps=2,
            lora=False,
            per_device_train_batch_size=1,
            logging_steps=1,
            # only when distributed: accelerate's PartialState given a backend but no process group
            # (a plain single process) fails with "Default process group has not been initialized"
            ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
            ddp_find_unused_parameters=False,
        )
        say(f"RANK={rank} MODEL_PAD {model.config.pad_token_id}")
    say(f"RANK={rank} DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
