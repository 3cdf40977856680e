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
from typing import Any


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

    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from pytest_tokenguard import align_special_tokens, predict_trainer_alignment
    from pytest_tokenguard.suite import zoo

    model, tokenizer = zoo.build("qwen3-0.6b")
    if mode == "aligned":
        say(f"RANK={rank} ALIGNED {align_special_tokens(model, tokenizer)}")
        for field, value in predict_trainer_alignment(model, tokenizer).items():
            setattr(model.config, field, value)
            setattr(model.generation_config, field, value)
    encoded: list[dict[str, Any]] = [dict(tokenizer(text, truncation=True, max_length=64)) for text in zoo.chat_texts(tokenizer)]
    with tempfile.TemporaryDirectory(prefix="ddp_train_") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            max_steps=2,
            per_device_train_batch_size=1,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            # only when distributed: accelerate's PartialState given a backend but no process group
            # (a plain single process) fails with "Default process group has not been initialized"
            ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
            disable_tqdm=True,
            dataloader_num_workers=0,
            ddp_find_unused_parameters=False,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=encoded,
            processing_class=tokenizer,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        )
        trainer.train()
        say(f"RANK={rank} PARALLEL {args.parallel_mode} world={args.world_size} process_index={args.process_index}")
        say(f"RANK={rank} MODEL_PAD {model.config.pad_token_id}")
    say(f"RANK={rank} DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
