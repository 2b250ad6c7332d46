#!/usr/bin/env bash
# Reproduces Ra-DPO on Anthropic HH with Pythia-1.4B or -2.8B (Zhang et al. 2025),
# evaluated by win rate on AlpacaEval: SFT on HH chosen responses -> dpo, tdpo,
# radpo on the HH pairs -> frontier -> AlpacaEval win rate of each policy.
# Needs: GPUs (1.4B: 1x 80 GB or LoRA; 2.8B: several), the hub or local mirrors of
# Anthropic/hh-rlhf, EleutherAI/pythia-*, tatsu-lab/alpaca_eval and the
# OpenAssistant deberta reward model.   MODEL=pythia-2.8b bash radpo_hh.sh
set -euo pipefail
PY=${PY:-python}
MODEL=${MODEL:-pythia-1.4b}
EXPERIMENT=$([ "$MODEL" = pythia-2.8b ] && echo radpo_hh_pythia28 || echo radpo_hh_pythia14)
OUT=${OUT:-outputs/pipelines/radpo_hh_$MODEL}

$PY -m riskalign.train objective=sft model="$MODEL" data=hh reward=oasst-deberta trainer=gpu \
    trainer.max_steps=5000 trainer.accumulate_grad_batches=8 optim.lr=5e-6 \
    hydra.run.dir="$OUT/sft"
$PY -m riskalign.train -m experiment="$EXPERIMENT" model.init_from="$OUT/sft/policy" \
    objective=dpo,tdpo,radpo seed=0,1,2 hydra.sweep.dir="$OUT/align"
$PY -m riskalign.frontier "$OUT/align"
for policy in "$OUT"/align/*/policy; do
    $PY -m riskalign.evaluate policy="$policy" model="$MODEL" model.init_from="$OUT/sft/policy" \
        data=alpacaeval reward=oasst-deberta eval.max_new_tokens=256 \
        hydra.run.dir="$(dirname "$policy")/alpacaeval"
done
