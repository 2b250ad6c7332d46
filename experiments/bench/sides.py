"""The measured trainers. Each runs in a child process of bench.py and returns its figures.

Both sides train the same pairs, in order (no shuffling), with batch `batch_size`, AdamW at a
constant learning rate, gradient clipping at `max_grad_norm`. riskalign runs fp32 on the CPU
(bf16 on a GPU); TRL keeps DPOConfig's defaults (bf16 autocast, gradient checkpointing).
experiments/bench_vs_trl.py runs riskalign through its command line instead. Step times come
from callbacks around each optimizer step; the first `warmup_steps` are dropped; reported
throughput uses the median step.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from workload import Workload, compose


def _figures(seconds: list[float], tokens: list[int], workload: Workload) -> dict[str, Any]:
    timed, timed_tokens = seconds[workload.warmup_steps:], tokens[workload.warmup_steps:]
    median = statistics.median(timed)
    return {
        "step_seconds_median": median,
        "step_seconds": [round(s, 4) for s in timed],
        "pairs_per_second": workload.batch_size / median,
        "tokens_per_second": statistics.fmean(timed_tokens) / median,
        "tokens_per_step": statistics.fmean(timed_tokens),
    }


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def riskalign(workload: Workload, source: str, pairs: list[dict], objective: str,
              cache: bool, erm: bool = False) -> dict[str, Any]:
    """riskalign's AlignmentModule under a Lightning Trainer, as `riskalign.train` builds it.
    `erm`: radpo with the nested entropic risk instead of CVaR."""
    import lightning
    from datasets import Dataset, DatasetDict
    from lightning import Callback

    from riskalign import objectives
    from riskalign.data.preference import PreferenceDataModule
    from riskalign.models.loading import load_policy, load_tokenizer
    from riskalign.models.references import load_reference
    from riskalign.modules.alignment import AlignmentModule
    from riskalign.training.reference_cache import attach_reference_logps

    cfg = compose(workload, f"objective={objective}", f"optim.lr={workload.lr}",
                  "optim.warmup_steps=0", f"objective.beta={workload.beta}",
                  *(["objective.drift.measure=erm"] if erm else []))
    tokenizer = load_tokenizer(source)
    splits = DatasetDict({"train": Dataset.from_list(pairs),
                          "eval": Dataset.from_list(pairs[: workload.batch_size])})

    class InOrder(PreferenceDataModule):  # the same batches as TRL's sequential sampler
        def train_dataloader(self):
            return self._loader("train", self.batch_size, shuffle=False)

    data = InOrder(splits, tokenizer, max_length=workload.max_length,
                   max_prompt_length=workload.max_length // 2, batch_size=workload.batch_size,
                   eval_batch_size=workload.batch_size)
    data.setup("fit")
    policy = load_policy(source, cfg.model)
    fill_seconds = None
    built = objectives.build(**_container(cfg.objective))
    if cache:
        started = time.perf_counter()
        attach_reference_logps(data, source, cfg.model, Path(tempfile.mkdtemp()),
                               lambda: load_reference(source, cfg.model, policy), _device())
        fill_seconds = time.perf_counter() - started
        reference = None
    else:
        reference = load_reference(source, cfg.model, policy)
    module = AlignmentModule(policy, reference, built, _container(cfg.optim))
    seconds, tokens = [], []

    class Timer(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            _synchronize()
            tokens.append(int(batch["attention_mask"].sum()))
            self.started = time.perf_counter()

        def on_train_batch_end(self, *args):
            _synchronize()
            seconds.append(time.perf_counter() - self.started)

    trainer = lightning.Trainer(
        accelerator="gpu" if torch.cuda.is_available() else "cpu", devices=1,
        precision="bf16-mixed" if torch.cuda.is_available() else "32-true",
        max_steps=workload.total_steps, gradient_clip_val=workload.max_grad_norm,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[Timer()],
        default_root_dir=tempfile.mkdtemp(),
    )
    trainer.fit(module, datamodule=data)
    return {**_figures(seconds, tokens, workload), "reference_fill_seconds": fill_seconds}


def trl(workload: Workload, source: str, pairs: list[dict], precompute: bool) -> dict[str, Any]:
    """TRL's DPOTrainer on the same model files and pairs."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from riskalign.models.loading import load_tokenizer

    tokenizer = load_tokenizer(source)
    gpu = torch.cuda.is_available()
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=workload.batch_size,
        max_steps=workload.total_steps, learning_rate=workload.lr, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
        max_grad_norm=workload.max_grad_norm, beta=workload.beta, loss_type=["sigmoid"],
        max_length=workload.max_length, precompute_ref_log_probs=precompute,
        # precision and gradient checkpointing at DPOConfig's defaults (bf16 autocast and
        # checkpointing on), as TRL's docs set it up; this bench once passed bf16=False on a
        # CPU with checkpointing still on, which is why its TRL steps were the slowest
        train_sampling_strategy="sequential", use_cpu=not gpu,
        report_to=[], logging_steps=10_000, save_strategy="no", seed=workload.seed,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    dtype = torch.float32
    policy = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    reference = None if precompute else AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    seconds: list[float] = []
    started_at: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            _synchronize()
            started_at.append(time.perf_counter())

        def on_step_end(self, *args, **kwargs):
            _synchronize()
            seconds.append(time.perf_counter() - started_at[-1])

    started = time.perf_counter()
    trainer = DPOTrainer(model=policy, ref_model=reference, args=config,
                         train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                         callbacks=[Timer()])
    setup_seconds = time.perf_counter() - started
    tokens = _trl_tokens_per_step(trainer.train_dataset, workload.batch_size)
    trainer.train()
    return {**_figures(seconds, tokens, workload),
            "reference_fill_seconds": setup_seconds if precompute else None}


def _trl_tokens_per_step(dataset, batch_size: int) -> list[int]:
    """Non-pad tokens of each step's [chosen; rejected] rows, from TRL's own tokenization."""
    per_pair = [2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"])
                for r in dataset]
    return [sum(per_pair[i:i + batch_size]) for i in range(0, len(per_pair), batch_size)]


def _container(node) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
