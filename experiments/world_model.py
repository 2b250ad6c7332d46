"""What the SmolLM2 benchmarks share: the embedded world and a model's directory, as
`riskalign.train model=<name> data=reviews` resolves them (built or converted on first use)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def world_and_model(model_name: str = "smollm2-135m"):
    """(the run config, the embedded world, the model directory `from_pretrained` reads)."""
    from hydra import compose, initialize_config_dir

    import riskalign  # noqa: F401  (config resolvers)
    from riskalign.recipes.sources import ensure_world, model_source

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model_name}", "data=reviews"])
    world = ensure_world(cfg)
    return cfg, world, model_source(cfg, world)
