"""Token-level statistics of teacher-forced sequences: log-probabilities and drift.

For every counted position t (label != -100) of every row, with
q_t = softmax(policy_logits_t), p_t = softmax(ref_logits_t) and
Δ_t(v) = log p_t(v) − log q_t(v), this module computes in one pass

    log q_t(y_t),  log p_t(y_t),  KL(p_t ‖ q_t)  and a risk measure ρ[Δ_t(V)], V ~ p_t,

and sums them per row (docs/objectives.md §2).

Memory is the point of the design. The work runs on the counted positions
only, `chunk_size` of them at a time, inside one autograd Function whose
backward recomputes a chunk's softmaxes instead of saving them, so the extra
memory is O(chunk_size · V) rather than O(N · T · V). That is cheap because
every measure's gradient with respect to the policy logits z has the form

    dρ/dz = q · Σ_v u_v − u

for a vector u: u = p for the mean (KL), u = p · (tail weight) / a for CVaR and
u = softmax(log p + μΔ) for ERM. The backward is written in differentiable
torch ops, so double backprop (the WDPO penalty) runs through it.

The logits need not exist either. Given a `Projection` (final hidden states and
the LM head's weight) in place of logits, a second Function,
`_ProjectedTokenStatistics`, projects each chunk's positions itself and projects
them again in the backward, so neither model's [N, T, V] logits are ever made;
both Functions run the same per-chunk math (`_chunk_statistics`,
`_chunk_gradient`) on a chunk's logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from riskalign.config.fields import REQUIRED, Choice, Real, boolean, check_settings, setting

IGNORE_INDEX = -100
MEASURES = ("mean", "cvar", "erm")
WEIGHTINGS = ("probability", "uniform")
# Floats per [chunk, V] tensor when chunk_size is None: cache-sized on a CPU,
# large enough on a GPU that kernel launches do not dominate.
_AUTO_CHUNK_FLOATS = {"cpu": 1 << 20, "accelerator": 1 << 24}
# Floats per [block, V] tensor of a Projection: each block of positions is projected at
# once (reading the head's whole weight), then its statistics run chunk by chunk.
_PROJECTED_BLOCK_FLOATS = {"cpu": 1 << 24, "accelerator": 1 << 26}

# Bits per pass of the radix select that finds the exact CVaR threshold: 11
# gives 3 passes for float32 with histograms far smaller than a vocabulary.
_RADIX_BITS = 11
# Vocabularies up to this size find the CVaR threshold by sorting instead.
_SORT_AT_MOST = 1 << _RADIX_BITS


@dataclass(frozen=True)
class DriftSpec:
    """A nested risk measure of Δ_t(V), V ~ p_t (docs/objectives.md §2).

    `weighting="probability"` keeps the upper tail of reference mass
    `tail_mass` exactly, splitting the boundary entry; `weighting="uniform"`
    keeps the entries above the (1 − tail_mass) quantile of the |V| values of Δ
    counted uniformly (the released Ra-DPO code). `normalize` divides the kept
    Σ p·Δ by `tail_mass`. Only `cvar` reads those three; only `erm` reads `mu`.
    """

    measure: str = setting(REQUIRED, Choice(MEASURES))
    tail_mass: float = setting(0.95, Real(low=0.0, high=1.0))
    mu: float = setting(1.0, Real(low=0.0))
    weighting: str = setting("probability", Choice(WEIGHTINGS))
    normalize: bool = setting(True, boolean)

    def __post_init__(self) -> None:
        check_settings(self, "drift")  # refusals are ConfigErrors, so ValueErrors


@dataclass(frozen=True)
class Projection:
    """Logits not yet computed: hidden [N, T, H] @ weight [V, H].T + bias [V] (or None).

    What an LM head would give, passed where logits [N, T, V] are taken
    (`sequence_statistics`, `sequence_logps`, an objective's `loss_from_logits`),
    so that the statistics project `chunk_size` counted positions at a time and
    the [N, T, V] logits never exist. Gradients reach the hidden states, and the
    weight and bias where they require grad. Indexing selects rows of the hidden
    states; multiplying by a number scales the logits.
    """

    hidden: Tensor
    weight: Tensor
    bias: Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.hidden.shape[:-1], self.weight.shape[0]))

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    @property
    def requires_grad(self) -> bool:
        return any(t is not None and t.requires_grad for t in (self.hidden, self.weight, self.bias))

    def dim(self) -> int:
        return self.hidden.dim()

    def __getitem__(self, index) -> Projection:
        return Projection(self.hidden[index], self.weight, self.bias)

    def __mul__(self, scale: float) -> Projection:
        return Projection(
            self.hidden * scale, self.weight, None if self.bias is None else self.bias * scale
        )

    def detach(self) -> Projection:
        return Projection(
            self.hidden.detach(),
            self.weight.detach(),
            None if self.bias is None else self.bias.detach(),
        )

    def logits(self) -> Tensor:
        """The logits [N, T, V] themselves: what this class exists to avoid."""
        return torch.nn.functional.linear(self.hidden, self.weight, self.bias)


class SequenceStatistics(NamedTuple):
    """Per-row sums over the counted positions; every field is [N].

    `ref_logps` and `kl` are None without reference logits and carry no
    gradient; `drift` is None without a drift measure.
    """

    policy_logps: Tensor
    ref_logps: Tensor | None
    kl: Tensor | None
    drift: Tensor | None
    lengths: Tensor


def sequence_statistics(
    policy_logits: Tensor | Projection,
    ref_logits: Tensor | Projection | None,
    labels: Tensor,
    drift: DriftSpec | None = None,
    *,
    chunk_size: int | None = None,
) -> SequenceStatistics:
    """Log-probabilities, sequential KL and drift of N sequences in one pass.

    policy_logits, ref_logits: [N, T, V], aligned with labels [N, T] (the
    caller has shifted them); -100 marks positions that do not count. Either
    may be a Projection (hidden states and an LM head) instead: then each chunk
    projects its own positions and no [N, T, V] tensor is made (if only one of
    the two is a Projection, its logits are made). ref_logits are treated as
    constants. chunk_size: counted positions processed at once (all rows
    together); None picks about 2**20 floats per [chunk, V] tensor on a CPU and
    2**24 on an accelerator. A Projection is projected in blocks of about 2**24
    (CPU) or 2**26 floats, whole chunks each, for an efficient matmul.
    """
    if policy_logits.dim() != 3 or labels.shape != policy_logits.shape[:2]:
        raise ValueError(
            f"expected logits [N, T, V] and labels [N, T], got {tuple(policy_logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if ref_logits is not None and ref_logits.shape != policy_logits.shape:
        raise ValueError(
            f"ref_logits {tuple(ref_logits.shape)} must have the shape of policy_logits "
            f"{tuple(policy_logits.shape)}"
        )
    if drift is not None and ref_logits is None:
        raise ValueError("a drift measure needs ref_logits")
    projected = isinstance(policy_logits, Projection)
    if ref_logits is not None and isinstance(ref_logits, Projection) != projected:
        # one model's head could not be used alone (a fallback): compare logits with logits
        if projected:
            policy_logits, projected = policy_logits.logits(), False
        else:
            ref_logits = ref_logits.logits()
    n, t, v = policy_logits.shape
    device = "cpu" if policy_logits.device.type == "cpu" else "accelerator"
    if chunk_size is None:
        chunk_size = max(1, _AUTO_CHUNK_FLOATS[device] // v)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} is out of range: must be >= 1")
    counted = labels.reshape(-1) != IGNORE_INDEX
    positions = counted.nonzero().squeeze(1)
    targets = labels.reshape(-1).index_select(0, positions)
    if projected:
        assert isinstance(policy_logits, Projection)
        ref = None if ref_logits is None else ref_logits.detach()
        assert ref is None or isinstance(ref, Projection)
        policy_tok, ref_tok, kl_tok, drift_tok = _ProjectedTokenStatistics.apply(
            _counted_hidden(policy_logits, positions),
            policy_logits.weight,
            policy_logits.bias,
            None if ref is None else _counted_hidden(ref, positions),
            None if ref is None else ref.weight,
            None if ref is None else ref.bias,
            targets,
            drift,
            chunk_size,
            max(1, _PROJECTED_BLOCK_FLOATS[device] // (v * chunk_size)) * chunk_size,
        )
    else:
        policy_tok, ref_tok, kl_tok, drift_tok = _TokenStatistics.apply(
            policy_logits.reshape(n * t, v),
            None if ref_logits is None else ref_logits.detach().reshape(n * t, v),
            positions,
            targets,
            drift,
            chunk_size,
        )
    rows = torch.div(positions, t, rounding_mode="floor")

    def per_row(values: Tensor) -> Tensor:
        return values.new_zeros(n).index_add(0, rows, values)

    return SequenceStatistics(
        policy_logps=per_row(policy_tok),
        ref_logps=None if ref_logits is None else per_row(ref_tok),
        kl=None if ref_logits is None else per_row(kl_tok),
        drift=None if drift is None else per_row(drift_tok),
        lengths=counted.reshape(n, t).sum(1),
    )


def sequence_logps(
    logits: Tensor | Projection, labels: Tensor, *, chunk_size: int | None = None
) -> Tensor:
    """log π(y|x) = Σ_t mask_t · log_softmax(logits_t)[y_t]: logits [N, T, V] (or a
    Projection) → [N]."""
    return sequence_statistics(logits, None, labels, chunk_size=chunk_size).policy_logps


def token_drift(
    ref_logits: Tensor,
    policy_logits: Tensor,
    labels: Tensor,
    measure: str,
    *,
    tail_mass: float = 0.95,
    mu: float = 1.0,
    weighting: str = "probability",
    normalize: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """D_ρ(y) = Σ_t mask_t · ρ_{V~p_t}[Δ_t(V)] for logits [N, T, V] → [N].

    Differentiable with respect to policy_logits only.
    """
    spec = DriftSpec(measure, tail_mass=tail_mass, mu=mu, weighting=weighting, normalize=normalize)
    stats = sequence_statistics(policy_logits, ref_logits, labels, spec, chunk_size=chunk_size)
    assert stats.drift is not None
    return stats.drift


class _TokenStatistics(torch.autograd.Function):
    """Per counted position: log q(y), log p(y), KL(p‖q) and ρ[Δ], each [P].

    Only the policy log-probability and the drift are differentiable, with
    respect to the policy logits. Saved for backward: the logits themselves (no
    copy) and, for CVaR, the tail's threshold and the fraction kept at it per
    position.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        policy: Tensor,
        ref: Tensor | None,
        positions: Tensor,
        targets: Tensor,
        drift: DriftSpec | None,
        chunk_size: int,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        dtype = torch.promote_types(policy.dtype, torch.float32)
        policy_tok, ref_tok, kl_tok, drift_tok, thresholds, fractions = (
            policy.new_zeros(positions.numel(), dtype=dtype) for _ in range(6)
        )
        # The CVaR threshold search's int64 buffer, reused across chunks.
        cvar = drift is not None and drift.measure == "cvar"
        digits = policy.new_empty(
            (min(chunk_size, positions.numel()) if cvar else 0, policy.shape[1]), dtype=torch.int64
        )
        for start in range(0, positions.numel(), chunk_size):
            rows = slice(start, start + chunk_size)
            index = positions[rows]
            z = policy.index_select(0, index).to(dtype)
            r = None if ref is None else ref.index_select(0, index).to(dtype)
            _chunk_statistics(
                z, r, targets[rows, None], drift, digits,
                (policy_tok, ref_tok, kl_tok, drift_tok, thresholds, fractions), rows,
            )
        if drift is not None and drift.measure == "mean":
            drift_tok = kl_tok.clone()
        ctx.save_for_backward(policy, ref, positions, targets, thresholds, fractions)
        ctx.drift, ctx.chunk_size = drift, chunk_size
        # One call: a second one would replace the first's set.
        ctx.mark_non_differentiable(ref_tok, kl_tok, *([drift_tok] if drift is None else []))
        ctx.set_materialize_grads(False)
        return policy_tok, ref_tok, kl_tok, drift_tok

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        grad_policy_tok: Tensor | None,
        _grad_ref_tok: Tensor | None,
        _grad_kl_tok: Tensor | None,
        grad_drift_tok: Tensor | None,
    ) -> tuple[Tensor | None, None, None, None, None, None]:
        policy, ref, positions, targets, thresholds, fractions = ctx.saved_tensors
        drift: DriftSpec | None = ctx.drift
        if drift is None:
            grad_drift_tok = None
        if grad_policy_tok is None and grad_drift_tok is None:
            return None, None, None, None, None, None
        dtype = torch.promote_types(policy.dtype, torch.float32)
        # Under create_graph (WDPO) this backward is itself recorded: there, reading or
        # writing the full [N·T, V] tensor once per chunk would copy it once per chunk in
        # the double backward, so the counted rows are selected once and split instead.
        recorded = torch.is_grad_enabled()
        selected = policy.index_select(0, positions).split(ctx.chunk_size) if recorded else ()
        grad, pieces = torch.zeros_like(policy), []
        for number, start in enumerate(range(0, positions.numel(), ctx.chunk_size)):
            rows = slice(start, start + ctx.chunk_size)
            index = positions[rows]
            z = (selected[number] if recorded else policy.index_select(0, index)).to(dtype)
            r = None if grad_drift_tok is None else ref.index_select(0, index).to(dtype)
            chunk = _chunk_gradient(
                z, r, targets[rows, None], grad_policy_tok, grad_drift_tok,
                thresholds, fractions, drift, rows,
            )
            if recorded:
                pieces.append(chunk)
            else:
                grad.index_copy_(0, index, chunk.to(grad.dtype))
        if recorded:
            grad.index_copy_(0, positions, torch.cat(pieces).to(grad.dtype))
        return grad, None, None, None, None, None


class _ProjectedTokenStatistics(torch.autograd.Function):
    """What _TokenStatistics computes, from counted hidden states [P, H] and an LM head
    (weight [V, H], bias [V] or None) per model instead of logits: each block of
    `block_size` positions (a multiple of chunk_size) is projected at once, its statistics
    run `chunk_size` positions at a time, and the backward projects the block again rather
    than keeping any [P, V] tensor.

    Differentiable with respect to the policy's hidden states, weight and bias; the
    reference's are constants. The projection runs in the autocast dtype where autocast
    is on (as the model's own head would) and in the weight's dtype otherwise; the
    statistics in at least float32. The backward is not itself differentiable (an
    objective that needs double backprop, WDPO, passes logits).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        ref_hidden: Tensor | None,
        ref_weight: Tensor | None,
        ref_bias: Tensor | None,
        targets: Tensor,
        drift: DriftSpec | None,
        chunk_size: int,
        block_size: int,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        compute = _projection_dtype(hidden, weight)
        dtype = torch.promote_types(compute, torch.float32)
        head = _cast_head(weight, bias, compute)
        ref_head = None if ref_weight is None else _cast_head(ref_weight, ref_bias, compute)
        count = hidden.shape[0]
        outputs = tuple(hidden.new_zeros(count, dtype=dtype) for _ in range(6))
        cvar = drift is not None and drift.measure == "cvar"
        digits = hidden.new_empty(
            (min(chunk_size, count) if cvar else 0, weight.shape[0]), dtype=torch.int64
        )
        for block in range(0, count, block_size):
            span = slice(block, block + block_size)
            z_block = _project(hidden[span], head, compute, dtype)
            r_block = None
            if ref_head is not None:
                r_block = _project(ref_hidden[span], ref_head, compute, dtype)
            for start in range(0, z_block.shape[0], chunk_size):
                local, rows = _rows(start, chunk_size), _rows(block + start, chunk_size)
                r = None if r_block is None else r_block[local]
                _chunk_statistics(
                    z_block[local], r, targets[rows, None], drift, digits, outputs, rows
                )
        policy_tok, ref_tok, kl_tok, drift_tok, thresholds, fractions = outputs
        if drift is not None and drift.measure == "mean":
            drift_tok = kl_tok.clone()
        ctx.save_for_backward(
            hidden, weight, bias, ref_hidden, ref_weight, ref_bias, targets, thresholds, fractions
        )
        ctx.drift, ctx.chunk_size, ctx.block_size, ctx.compute = (
            drift, chunk_size, block_size, compute
        )
        ctx.mark_non_differentiable(ref_tok, kl_tok, *([drift_tok] if drift is None else []))
        ctx.set_materialize_grads(False)
        return policy_tok, ref_tok, kl_tok, drift_tok

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        grad_policy_tok: Tensor | None,
        _grad_ref_tok: Tensor | None,
        _grad_kl_tok: Tensor | None,
        grad_drift_tok: Tensor | None,
    ) -> tuple[Tensor | None, ...]:
        (hidden, weight, bias, ref_hidden, ref_weight, ref_bias,
         targets, thresholds, fractions) = ctx.saved_tensors
        drift: DriftSpec | None = ctx.drift
        if drift is None:
            grad_drift_tok = None
        nothing = (None,) * 10
        if grad_policy_tok is None and grad_drift_tok is None:
            return nothing
        compute: torch.dtype = ctx.compute
        dtype = torch.promote_types(compute, torch.float32)
        head = _cast_head(weight, bias, compute)
        ref_head = None
        if grad_drift_tok is not None:
            ref_head = _cast_head(ref_weight, ref_bias, compute)
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None  # every block writes
        grad_weight = torch.zeros_like(weight) if needs_weight else None
        grad_bias = torch.zeros_like(bias) if needs_bias else None
        for block in range(0, hidden.shape[0], ctx.block_size):
            rows = slice(block, block + ctx.block_size)
            h = hidden[rows].to(compute)
            z_block = _project(h, head, compute, dtype)
            r_block = None
            if ref_head is not None:
                r_block = _project(ref_hidden[rows], ref_head, compute, dtype)
            g = torch.empty_like(z_block, dtype=compute)
            for start in range(0, z_block.shape[0], ctx.chunk_size):
                local, chunk = _rows(start, ctx.chunk_size), _rows(block + start, ctx.chunk_size)
                r = None if r_block is None else r_block[local]
                g[local] = _chunk_gradient(
                    z_block[local], r, targets[chunk, None], grad_policy_tok, grad_drift_tok,
                    thresholds, fractions, drift, chunk,
                )
            # z = h @ W.T + b: dh = g @ W, dW = g.T @ h, db = Σ g
            if grad_hidden is not None:
                grad_hidden[rows] = g @ head[0]
            if grad_weight is not None:
                if grad_weight.dtype == compute:
                    grad_weight.addmm_(g.T, h)
                else:
                    grad_weight += g.T @ h
            if grad_bias is not None:
                grad_bias += g.sum(0)
        return (grad_hidden, grad_weight, grad_bias, *nothing[3:])


def _rows(start: int, size: int) -> slice:
    return slice(start, start + size)


def _counted_hidden(projection: Projection, positions: Tensor) -> Tensor:
    """The hidden states [P, H] at the flat counted positions of a Projection [N, T, ·]."""
    hidden = projection.hidden
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)


def _projection_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype an LM head's matmul runs in: autocast's where it is on, as in the model."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _cast_head(
    weight: Tensor, bias: Tensor | None, dtype: torch.dtype
) -> tuple[Tensor, Tensor | None]:
    """The head in the projection's dtype: cast once per pass, not once per chunk."""
    return weight.to(dtype), None if bias is None else bias.to(dtype)


def _project(
    hidden: Tensor, head: tuple[Tensor, Tensor | None], compute: torch.dtype, dtype: torch.dtype
) -> Tensor:
    """A chunk's logits [C, V]: hidden [C, H] through the head in `compute`, then in `dtype`."""
    weight, bias = head
    return torch.nn.functional.linear(hidden.to(compute), weight, bias).to(dtype)


def _chunk_statistics(
    z: Tensor,
    r: Tensor | None,
    target: Tensor,
    drift: DriftSpec | None,
    digits: Tensor,
    outputs: tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor],
    rows: slice,
) -> None:
    """One chunk's statistics, from its policy logits z [C, V] and reference logits r [C, V]
    (None without a reference), in the compute dtype; target [C, 1].

    Writes rows `rows` of outputs = (log q(y), log p(y), KL, ρ[Δ], CVaR threshold, CVaR
    fraction), each [P]; without a reference only the first, and the mean's ρ is left to
    the caller (it is the KL). Both Functions call this: what they differ in is only where
    a chunk's logits come from.
    """
    policy_tok, ref_tok, kl_tok, drift_tok, thresholds, fractions = outputs
    log_q = torch.log_softmax(z, dim=-1)
    policy_tok[rows] = log_q.gather(1, target).squeeze(1)
    if r is None:
        return
    log_p = torch.log_softmax(r, dim=-1)
    p = log_p.exp()
    delta = _finite(log_p - log_q)
    ref_tok[rows] = log_p.gather(1, target).squeeze(1)
    kl_tok[rows] = torch.linalg.vecdot(p, delta)
    if drift is None or drift.measure == "mean":
        return
    if drift.measure == "erm":
        tilted = torch.add(log_p, delta, alpha=drift.mu)
        drift_tok[rows] = torch.logsumexp(tilted, dim=-1) / drift.mu
        return
    # + 0.0 turns −0.0 into +0.0, keeping the integer keys of the threshold
    # search in step with float comparison
    shifted = _finite(r - z).add_(0.0)
    threshold, fraction = _cvar_threshold(shifted, p, drift, digits)
    drift_tok[rows] = torch.linalg.vecdot(
        _tail_weights(shifted, p, threshold, fraction, drift), delta
    )
    thresholds[rows], fractions[rows] = threshold, fraction


def _chunk_gradient(
    z: Tensor,
    r: Tensor | None,
    target: Tensor,
    grad_policy_tok: Tensor | None,
    grad_drift_tok: Tensor | None,
    thresholds: Tensor,
    fractions: Tensor,
    drift: DriftSpec | None,
    rows: slice,
) -> Tensor:
    """The gradient [C, V] of a chunk's policy logits z, from the incoming gradients of
    log q(y) and ρ[Δ] (each [P] or None; rows `rows` are the chunk's). r: the reference
    logits, needed only with a drift gradient. Differentiable (WDPO's double backprop)."""
    q = torch.softmax(z, dim=-1)
    # d log q(y)/dz = onehot(y) − q and dρ/dz = q·Σu − u (module docstring):
    # the chunk's gradient is q·(g_ρ·Σu − g_y) − g_ρ·u + g_y·onehot(y).
    coefficient = torch.zeros_like(q[:, :1])
    if grad_policy_tok is not None:
        coefficient = coefficient - grad_policy_tok[rows, None]
    u = None
    if grad_drift_tok is not None:
        assert r is not None
        u = _drift_direction(z, r, thresholds[rows], fractions[rows], drift)
        coefficient = coefficient + grad_drift_tok[rows, None] * u.sum(-1, keepdim=True)
    chunk = q * coefficient
    if u is not None:
        chunk.addcmul_(grad_drift_tok[rows, None], u, value=-1.0)
    if grad_policy_tok is not None:
        chunk.scatter_add_(1, target, grad_policy_tok[rows, None])
    return chunk


def _drift_direction(
    z: Tensor, r: Tensor, threshold: Tensor, fraction: Tensor, drift: DriftSpec | None
) -> Tensor:
    """The vector u [C, V] of a measure, from the chunk's policy and reference logits."""
    assert drift is not None
    if drift.measure == "mean":
        return torch.softmax(r, dim=-1)
    if drift.measure == "erm":
        # softmax(log p + μΔ) = softmax(r + μ(r − z)): the log-normalisers cancel.
        return torch.softmax(torch.add(r, _finite(r - z), alpha=drift.mu), dim=-1)
    # The tail weights are piecewise constant in z: no gradient flows through them.
    return _tail_weights(
        _finite(r - z.detach()), torch.softmax(r, dim=-1), threshold, fraction, drift
    )


def _finite(values: Tensor) -> Tensor:
    """In place: nan → 0 and ±inf → the largest finite floats.

    Vocabulary entries with −inf logits make Δ infinite or nan; their
    reference mass is 0, and 0 · (finite) keeps every sum finite.
    """
    info = torch.finfo(values.dtype)
    return values.nan_to_num_(0.0, posinf=info.max, neginf=info.min)


def _tail_weights(
    shifted: Tensor, p: Tensor, threshold: Tensor, fraction: Tensor, drift: DriftSpec
) -> Tensor:
    """CVaR's u = p·w/a [C, V], computed in place in `shifted` (r − z, as from _finite).

    w = 1 above the threshold, `fraction` at it and 0 below; the fraction is
    spread evenly over ties (at step 0, where every Δ is 0, the gradient is
    then 0). shifted orders the entries as Δ does (they differ by a per-row
    constant) and is recomputed bit for bit in the backward. The step is
    saturating arithmetic: the gap to the threshold times the largest float,
    twice, is ±inf for any nonzero gap (even one ulp) and 0 at the threshold,
    so adding the fraction and clamping to [0, 1] gives w in a few in-place
    passes (masked_fill and where are several times slower on a CPU).
    """
    largest = torch.finfo(shifted.dtype).max
    weight = shifted.sub_(threshold[:, None]).mul_(largest).mul_(largest)
    weight = weight.add_(fraction[:, None]).clamp_(0.0, 1.0).mul_(p)
    return weight.div_(drift.tail_mass) if drift.normalize else weight


def _cvar_threshold(
    shifted: Tensor, p: Tensor, drift: DriftSpec, digits: Tensor
) -> tuple[Tensor, Tensor]:
    """The CVaR tail's threshold [C] on shifted = r − z, and the fraction [C] kept at it."""
    if drift.weighting == "uniform":
        threshold = _uniform_quantile(shifted, 1.0 - drift.tail_mass)
        return threshold, torch.zeros_like(threshold)
    if shifted.shape[-1] <= _SORT_AT_MOST:
        return _upper_quantile_by_sort(shifted, p, drift.tail_mass)
    return _upper_quantile(shifted, p, drift.tail_mass, digits[: shifted.shape[0]])


def _upper_quantile_by_sort(values: Tensor, weights: Tensor, mass: float) -> tuple[Tensor, Tensor]:
    """What `_upper_quantile` returns, by sorting each row: cheaper for small vocabularies,
    where the radix select's histograms are larger than the rows themselves."""
    order = values.argsort(dim=-1, descending=True)
    ordered, cumulative = values.gather(1, order), weights.gather(1, order).cumsum(-1)
    needed = torch.clamp(cumulative[:, -1], max=mass)  # rounding can leave the total under
    boundary = (cumulative < needed[:, None]).sum(-1).clamp(max=values.shape[-1] - 1)
    threshold = ordered.gather(1, boundary[:, None]).squeeze(1)
    above = torch.where(values > threshold[:, None], weights, 0.0).sum(-1)
    at_mass = torch.where(values == threshold[:, None], weights, 0.0).sum(-1)
    fraction = ((needed - above) / at_mass).nan_to_num(0.0, 0.0, 0.0).clamp(0.0, 1.0)
    return threshold, fraction


def _uniform_quantile(values: Tensor, level: float) -> Tensor:
    """torch.quantile(values, level, dim=-1) with linear interpolation, [C, V] → [C].

    Two kthvalue selections rather than torch.quantile, which sorts and refuses
    inputs of more than 2**24 elements.
    """
    position = level * (values.shape[-1] - 1)
    low = math.floor(position)
    lower = values.kthvalue(low + 1, dim=-1).values
    if position == low:
        return lower
    upper = values.kthvalue(low + 2, dim=-1).values
    return lower + (upper - lower) * (position - low)


def _upper_quantile(
    values: Tensor, weights: Tensor, mass: float, digits: Tensor
) -> tuple[Tensor, Tensor]:
    """Exact probability-weighted upper quantile of each row of values [C, V].

    Sorting a row by value descending and accumulating the weights, the
    boundary entry is the first at which the total reaches `mass`. Returns its
    value [C] (the threshold) and the fraction [C] of the weight of the entries
    at that value that brings the kept total to exactly `mass`.

    Found without a sort (sorting a 32k vocabulary costs as much as dozens of
    elementwise passes on a CPU): a radix select over order-preserving integer
    keys, `_RADIX_BITS` bits per pass from the top. Each pass histograms the
    weights of the candidate entries by their next digit and keeps the bin
    where the mass from the top reaches what is still needed. Only the first
    pass reads the whole chunk: the entries left in its boundary bin are
    gathered, and the later passes read only them (a few percent of a
    vocabulary; all of it only when every Δ is nearly equal, as at step 0).
    digits: an int64 buffer shaped like values, reused across chunks (a fresh
    one costs page faults on a CPU).
    """
    keys = _ordered_keys(values)
    (n, v), key_bits = values.shape, keys.element_size() * 8
    remaining = torch.full_like(values[:, 0], mass)

    shift = key_bits - _RADIX_BITS
    half = 1 << (_RADIX_BITS - 1)
    # int64 digits: scatter_add_ wants them, and it beats index_add_ on a CPU.
    digits = torch.bitwise_right_shift(keys, shift, out=digits)
    digits += half  # the top digit carries the sign: now in [0, 2**_RADIX_BITS)
    histogram = weights.new_zeros(n, 1 << _RADIX_BITS).scatter_add_(1, digits, weights)
    digit, remaining, at_mass = _boundary_bin(histogram, remaining)
    chosen = digit - half  # the signed value of the key bits decided so far
    # The candidates, as flat indices into the chunk, with their keys and weights.
    where = (digits == digit[:, None]).view(-1).nonzero().squeeze(1)
    keys, weights = keys.view(-1).index_select(0, where), weights.reshape(-1).index_select(0, where)

    while shift > 0:
        width = min(_RADIX_BITS, shift)
        shift -= width
        rows = torch.div(where, v, rounding_mode="floor")
        digits = (keys >> shift) & ((1 << width) - 1)
        histogram = weights.new_zeros(n << width).index_add_(0, (rows << width) + digits, weights)
        digit, remaining, at_mass = _boundary_bin(histogram.view(n, -1), remaining)
        chosen = (chosen << width) + digit
        if shift > 0:
            keep = (digits == digit.to(digits.dtype).index_select(0, rows)).nonzero().squeeze(1)
            where, keys, weights = (
                where.index_select(0, keep),
                keys.index_select(0, keep),
                weights.index_select(0, keep),
            )

    integer = {torch.float32: torch.int32, torch.float64: torch.int64}[values.dtype]
    threshold = _flip_negatives(chosen.to(integer)).view(values.dtype)
    # at_mass is the weight of the entries at the threshold, remaining what is still needed from it.
    fraction = (remaining / at_mass).nan_to_num(0.0, 0.0, 0.0).clamp(0.0, 1.0)
    return threshold, fraction


def _boundary_bin(histogram: Tensor, remaining: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The bin of a weight histogram [C, K] (ascending bins) where the mass from the top reaches
    `remaining`.

    Returns that bin [C], the mass still needed from it [C] and its mass [C].
    """
    bins = histogram.shape[1]
    from_top = histogram.flip(-1).cumsum(-1)
    # Rounding can leave the total a hair under the target: never look past the mass present.
    remaining = torch.minimum(remaining, from_top[:, -1])
    crossing = (from_top < remaining[:, None]).sum(-1).clamp(max=bins - 1)
    before = from_top.gather(1, (crossing - 1).clamp(min=0)[:, None]).squeeze(1)
    before = torch.where(crossing > 0, before, torch.zeros_like(before))
    digit = bins - 1 - crossing
    return digit, remaining - before, histogram.gather(1, digit[:, None]).squeeze(1)


def _ordered_keys(values: Tensor) -> Tensor:
    """Signed integers ordered as the floats are (no nan, no −0.0): negative floats get their
    magnitude bits flipped."""
    integer = {torch.float32: torch.int32, torch.float64: torch.int64}[values.dtype]
    return _flip_negatives(values.view(integer))


def _flip_negatives(bits: Tensor) -> Tensor:
    """Flip every bit but the sign of the negative integers: floats are sign-magnitude, so this
    orders their bit patterns as the floats are ordered. It is its own inverse."""
    keys = bits >> (bits.element_size() * 8 - 1)
    keys &= torch.iinfo(bits.dtype).max
    keys ^= bits
    return keys
