#!/usr/bin/env bash
# The whole paper pipeline on the embedded world, offline, on a CPU in minutes:
# SFT on the world's chosen responses -> pairs sampled from the SFT model and ranked
# by VADER -> dpo and radpo on those pairs -> the alignment-vs-drift frontier.
# Same stages and commands as the GPU pipelines beside it; only the configs differ.
#   bash experiments/pipelines/world_sft_pairs_align.sh            # default sizes
#   EXTRA="debug=smoke" OUT=/tmp/p bash experiments/...            # seconds (tests)
set -euo pipefail
PY=${PY:-python}
OUT=${OUT:-outputs/pipelines/world}
EXTRA=${EXTRA:-}
OBJECTIVES=${OBJECTIVES:-dpo,radpo}

$PY -m riskalign.train objective=sft data=reviews $EXTRA hydra.run.dir="$OUT/sft"
$PY -m riskalign.pairs model=tiny model.init_from="$OUT/sft/policy" data=reviews reward=vader \
    pairs.samples_per_prompt=4 output="$OUT/pairs" $EXTRA
$PY -m riskalign.train -m objective="$OBJECTIVES" model.init_from="$OUT/sft/policy" \
    data=local data.path="$OUT/pairs/dataset" data.max_length=64 data.max_prompt_length=16 \
    $EXTRA hydra.sweep.dir="$OUT/align"
$PY -m riskalign.frontier "$OUT/align"
