#!/usr/bin/env bash
# Reproduces the Emotion preference-shift experiment of WDPO/KLDPO (Xu et al. 2025):
# SFT GPT-2 on Emotion texts -> pairs labelled at mixture weight 0.5 -> dpo, kldpo,
# wdpo -> each policy evaluated at shifted mixture weights 0.1 ... 0.9.
# Needs: 1 GPU, the hub or local mirrors of dair-ai/emotion, openai-community/gpt2
# and bhadresh-savani/distilbert-base-uncased-emotion.
set -euo pipefail
PY=${PY:-python}
OUT=${OUT:-outputs/pipelines/dro_emotion_gpt2}

$PY -m riskalign.train objective=sft model=gpt2 data=emotion reward=emotion_mixture trainer=gpu \
    trainer.max_steps=2000 optim.lr=1e-5 hydra.run.dir="$OUT/sft"
$PY -m riskalign.pairs model=gpt2 model.init_from="$OUT/sft/policy" data=emotion \
    reward=emotion_mixture reward.weight=0.5 pairs.selection=bradley_terry \
    pairs.max_new_tokens=48 output="$OUT/pairs"
for experiment in kldpo_emotion_gpt2 wdpo_emotion_gpt2; do
    $PY -m riskalign.train -m experiment=$experiment model.init_from="$OUT/sft/policy" \
        data=local data.source=path data.path="$OUT/pairs/dataset" seed=0,1,2 \
        hydra.sweep.dir="$OUT/align_$experiment"
done
$PY -m riskalign.train -m experiment=kldpo_emotion_gpt2 objective=dpo \
    model.init_from="$OUT/sft/policy" data=local data.source=path \
    data.path="$OUT/pairs/dataset" seed=0,1,2 hydra.sweep.dir="$OUT/align_dpo"
for policy in "$OUT"/align_*/*/policy; do
    $PY -m riskalign.evaluate -m policy="$policy" model=gpt2 model.init_from="$OUT/sft/policy" \
        data=emotion reward=emotion_mixture reward.weight=0.1,0.3,0.5,0.7,0.9 \
        hydra.sweep.dir="$(dirname "$policy")/shift"
done
