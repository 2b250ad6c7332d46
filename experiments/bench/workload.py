"""The work every side of the benchmark does: one model, the same pairs, the same settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Workload:
    """What both trainers are given. `model` is a riskalign model config name."""

    model: str = "smollm2-135m"
    batch_size: int = 8          # pairs per optimizer step
    warmup_steps: int = 2        # steps run before timing starts
    timed_steps: int = 6
    lr: float = 1e-6
    beta: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 512        # long enough that neither side truncates the world's pairs
    seed: int = 0
    cache_dir: str = str(REPO / ".cache" / "riskalign")

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.timed_steps

    def as_dict(self) -> dict:
        return asdict(self)


def compose(workload: Workload, *overrides: str):
    """The riskalign config of this workload: the embedded world's pairs, `model`, fp32 CPU."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import riskalign  # noqa: F401  (config resolvers)

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=[
            f"model={workload.model}", "data=reviews", f"paths.cache_dir={workload.cache_dir}",
            f"seed={workload.seed}", f"data.batch_size={workload.batch_size}",
            f"data.max_length={workload.max_length}",
            f"data.max_prompt_length={workload.max_length // 2}",
            *overrides,
        ])


def model_and_pairs(workload: Workload) -> tuple[str, list[dict[str, str]]]:
    """(the model directory both sides load, the pairs both sides train on, in order)."""
    from datasets import load_from_disk

    from riskalign.recipes.sources import ensure_world, model_source

    cfg = compose(workload)
    world = ensure_world(cfg)
    source = model_source(cfg, world)
    train = load_from_disk(str(world.dataset_dir))["train"]
    count = workload.batch_size * workload.total_steps
    if len(train) < count:
        raise SystemExit(f"the world has {len(train)} training pairs; the bench needs {count}")
    rows = train.select(range(count))
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
             for r in rows]
    return source, pairs
