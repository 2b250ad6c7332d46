"""Preference-optimisation objectives as pure tensor math (docs/objectives.md).

    objective = build("radpo", drift={"measure": "erm", "mu": 5.0})
    loss, metrics = objective.loss_from_logits(policy_logits, ref_logits, labels)

An objective is link × drift × reducer × penalty. Each named objective is one
registry entry and one file conf/objective/<name>.yaml whose keys are exactly
the keyword arguments of `build`; every composed objective has every key (the
preference objectives inherit them from conf/objective/base/pair.yaml), so any knob is
a plain Hydra override (no `+`):

    name: radpo            # the registry entry whose defaults the rest override
    beta: 0.1
    chunk_size: null       # counted token positions per chunk of token work; null: auto
    link:    {name: sigmoid, epsilon: 0.1, gamma: 0.5, length_normalize: false}
    drift:   {measure: cvar, tail_mass: 0.95, mu: 1.0, variant: 2, alpha: 0.5,
              weighting: probability, normalize: true}      # measure: null = no drift
    reducer: {name: mean, tau: 0.05, beta_prime: 1.0, tail_mass: 0.5, scope: local,
              normalize: true, weight_cap: null}
    penalty: {name: null, rho0: 0.01, form: paper}          # name: null = no penalty

From the command line:

    objective=radpo objective.reducer.name=kl_dro           # Ra-DPO drift, KL-DRO over pairs
    objective=radpo objective.drift.measure=erm objective.drift.mu=5   # nested ERM
    objective=dpo objective.penalty.name=wasserstein objective.penalty.rho0=0.005  # + WDPO
    objective=dpo objective.drift.measure=cvar              # DPO + Ra-DPO's CVaR drift term

A block's parameters are read only where they apply (tau only by kl_dro,
mu only by erm, ...). An objective with a penalty needs the policy's input
embeddings: `objective.requires_input_embeddings` tells the caller to pass
`inputs_embeds=` (requires_grad, part of the graph) to `loss_from_logits`.
`sft` takes only `rows` (chosen | all) and `chunk_size`.

Wrong values are refused by `build` with a one-line ObjectiveConfigError, e.g.
    objective.drift.tail_mass=1.5 is out of range: must be in (0, 1]
"""

from riskalign.objectives import functional
from riskalign.objectives.config import ObjectiveConfigError
from riskalign.objectives.objective import Objective
from riskalign.objectives.registry import build, names

__all__ = ["Objective", "ObjectiveConfigError", "build", "functional", "names"]
