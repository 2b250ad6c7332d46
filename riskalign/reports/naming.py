"""How metrics and strengths are written on axes, in legends and in table headers."""

from __future__ import annotations

from collections.abc import Sequence

from riskalign.reports.runs import Run

SYMBOLS = {"beta": "β", "tau": "τ", "alpha": "α", "mu": "μ", "rho0": "ρ₀", "epsilon": "ε",
           "gamma": "γ", "beta_prime": "β′", "tail_mass": "c"}
MIXED = "mixed"
AXIS_TITLES = {"reward_mean": "mean reward on held-out prompts",
               "kl": r"sampled KL$(\pi_\theta \,\|\, \pi_{\mathrm{ref}})$ per sequence"}


def strength_symbol(key: str) -> str:
    """`objective.beta` -> β; a key without a symbol is written whole."""
    return SYMBOLS.get(key.rsplit(".", 1)[-1], key)


def strength_text(key: str | None, value: str | None) -> str:
    return "" if key is None or value is None else f"{strength_symbol(key)}={value}"


def tail_fraction_text(runs: Sequence[Run]) -> str:
    """"10 %" when every run used eval.tail_fraction 0.1; "mixed" when they disagree."""
    fractions = {run.tail_fraction for run in runs}
    if len(fractions) != 1 or None in fractions:
        return MIXED
    return f"{100 * float(fractions.pop()):g} %"


def metric_title(metric: str, tail: str) -> str:
    """An axis label that says what was measured."""
    if metric == "reward_tail":
        return ("reward tail (runs used mixed tail fractions)" if tail == MIXED
                else f"reward tail: mean of the worst {tail} of prompts")
    return AXIS_TITLES.get(metric, metric)


def metric_header(metric: str, tail: str) -> str:
    """A table column's name."""
    if metric == "reward_tail":
        return "reward tail (mixed fractions)" if tail == MIXED else f"reward tail (worst {tail})"
    return {"reward_mean": "reward mean", "kl": "KL",
            "pairs/rewards/accuracies": "pair accuracy"}.get(metric, metric)
