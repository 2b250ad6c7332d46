#!/usr/bin/env bash
# Reproduces Ra-DPO on IMDb with GPT-2 Large (Zhang et al. 2025) against DPO and
# TDPO: SFT on IMDb reviews -> pairs from the SFT model ranked by distilbert-imdb ->
# dpo, tdpo, radpo (CVaR c = 0.97/0.98/0.99 and ERM) -> frontier.
# Needs: 1 GPU (>= 24 GB), the hub or local mirrors of stanfordnlp/imdb,
# openai-community/gpt2-large and lvwerra/distilbert-imdb.
set -euo pipefail
PY=${PY:-python}
OUT=${OUT:-outputs/pipelines/radpo_imdb_gpt2large}

$PY -m riskalign.train objective=sft model=gpt2-large data=imdb trainer=gpu \
    trainer.max_steps=2000 optim.lr=1e-5 data.max_length=256 hydra.run.dir="$OUT/sft"
$PY -m riskalign.pairs model=gpt2-large model.init_from="$OUT/sft/policy" data=imdb \
    reward=distilbert-imdb pairs.samples_per_prompt=4 pairs.max_new_tokens=64 \
    pairs.max_prompts=20000 output="$OUT/pairs"
ALIGN=(experiment=radpo_imdb_gpt2large model.init_from="$OUT/sft/policy"
       data=local data.source=path data.path="$OUT/pairs/dataset" seed=0,1,2)
$PY -m riskalign.train -m "${ALIGN[@]}" objective=dpo,tdpo hydra.sweep.dir="$OUT/align/baselines"
$PY -m riskalign.train -m "${ALIGN[@]}" objective.drift.tail_mass=0.97,0.98,0.99 \
    hydra.sweep.dir="$OUT/align/radpo_cvar"
$PY -m riskalign.train -m "${ALIGN[@]}" objective.drift.measure=erm objective.drift.mu=5 \
    hydra.sweep.dir="$OUT/align/radpo_erm"
$PY -m riskalign.frontier "$OUT/align"
