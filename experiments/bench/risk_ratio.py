"""riskalign's CVaR risk ratio against the straightforward torch.quantile implementation.

Both compute, per response token, CVaR of Δ(v) = log p(v) − log q(v) over the vocabulary
(the sequential risk ratio's inner measure) and its gradient with respect to the policy
logits, on the same tensors. The naive version materialises log-softmaxes and Δ for the
whole batch, thresholds with torch.quantile (in row blocks: torch.quantile refuses more
than 2**24 elements) and lets autograd keep every intermediate.
"""

from __future__ import annotations

import statistics
import time

import torch

from riskalign.objectives.tokens import DriftSpec, sequence_statistics

QUANTILE_LIMIT = 1 << 24  # elements torch.quantile accepts


def naive_cvar(policy_logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor,
               tail_mass: float) -> torch.Tensor:
    """Σ_t CVaR-uniform(Δ_t) per row [N], the way one would first write it."""
    log_q = torch.log_softmax(policy_logits, dim=-1)
    log_p = torch.log_softmax(ref_logits, dim=-1)
    delta = log_p - log_q
    flat = delta.detach().reshape(-1, delta.shape[-1])
    block = max(1, QUANTILE_LIMIT // flat.shape[-1])
    threshold = torch.cat([torch.quantile(flat[i:i + block], 1 - tail_mass, dim=-1)
                           for i in range(0, flat.shape[0], block)]).view(delta.shape[:-1])
    tail = (delta > threshold[..., None]).to(delta.dtype)
    per_token = (log_p.exp() * delta * tail).sum(-1) / tail_mass
    return (per_token * (labels != -100)).sum(-1)


def riskalign_cvar(policy_logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor,
                   tail_mass: float, weighting: str) -> torch.Tensor:
    spec = DriftSpec("cvar", tail_mass=tail_mass, weighting=weighting)
    return sequence_statistics(policy_logits, ref_logits, labels, spec).drift


def time_forward_backward(function, policy_logits, ref_logits, labels, repeats: int) -> dict:
    """Median seconds of forward + backward over `repeats` runs after one warm-up."""
    seconds = []
    for _ in range(repeats + 1):
        logits = policy_logits.detach().requires_grad_(True)
        started = time.perf_counter()
        function(logits, ref_logits, labels).sum().backward()
        if logits.is_cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return {"seconds_median": statistics.median(seconds[1:]), "grad": logits.grad}


def compare(vocab: int, rows: int = 16, length: int = 64, tail_mass: float = 0.95,
            repeats: int = 3, seed: int = 0) -> dict:
    """One vocabulary size: times of each implementation and how far their results differ."""
    generator = torch.Generator().manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = torch.randn(rows, length, vocab, generator=generator).to(device)
    policy = (ref + 0.3 * torch.randn(rows, length, vocab, generator=generator).to(device))
    labels = torch.randint(0, vocab, (rows, length), generator=generator).to(device)
    labels[:, : length // 8] = -100  # a few prompt positions
    naive = time_forward_backward(lambda z, r, y: naive_cvar(z, r, y, tail_mass),
                                  policy, ref, labels, repeats)
    result = {"vocab": vocab, "rows": rows, "length": length, "tail_mass": tail_mass,
              "naive_seconds": naive["seconds_median"]}
    for weighting in ("uniform", "probability"):
        ours = time_forward_backward(
            lambda z, r, y, w=weighting: riskalign_cvar(z, r, y, tail_mass, w),
            policy, ref, labels, repeats)
        result[f"riskalign_{weighting}_seconds"] = ours["seconds_median"]
        result[f"speedup_{weighting}"] = naive["seconds_median"] / ours["seconds_median"]
        if weighting == "uniform":  # the same definition as the naive one: results must agree
            result["uniform_max_grad_gap"] = (ours["grad"] - naive["grad"]).abs().max().item()
    return result
