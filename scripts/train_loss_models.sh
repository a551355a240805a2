#!/usr/bin/env bash
# The paper's loss comparison, like with like: one acoustic model per loss (abs, log-abs,
# tanh-log-abs), trained from scratch on the same data with the same schedule and seed, then
# exported, so that the gallery's loss columns differ only by the loss (docs/GALLERY.md).
#
#   scripts/train_loss_models.sh DATA OUT [STEPS] [THREADS]
#
# DATA: a dataset (mel2mel data build); OUT: a folder for the runs and exports
# (OUT/run-LOSS, OUT/LOSS.{json,safetensors}); STEPS (default 1600) and THREADS (default 2).
# Resumable: rerun the same command after an interruption (each run resumes exactly; a
# finished run is only exported again). Then:
#
#   mel2mel gallery build --data DATA -o site --config original --config mulaw8 \
#       --config anchor --config fast-true \
#       --config model-abs=OUT/abs:fast:0 --config model-log-abs=OUT/log-abs:fast:0 \
#       --config model-tanh-log-abs=OUT/tanh-log-abs:fast:0
#
# (the column names that mel2mel listen results puts beside the paper's MOS).
set -euo pipefail
DATA=${1:?usage: $0 DATA OUT [STEPS] [THREADS]}
OUT=${2:?usage: $0 DATA OUT [STEPS] [THREADS]}
STEPS=${3:-1600}
THREADS=${4:-2}
mkdir -p "$OUT"
for LOSS in abs log-abs tanh-log-abs; do
    RUN="$OUT/run-$LOSS"
    LAST="$RUN/checkpoints/step-$(printf %08d "$STEPS").pt"
    if [ ! -f "$LAST" ]; then
        mel2mel train acoustic --data "$DATA" --config configs/acoustic.yaml \
            --threads "$THREADS" --no-progress --set train.loss="$LOSS" \
            --set train.steps="$STEPS" --set train.valid_every=400 \
            --set train.checkpoint_every=400 --set train.keep_checkpoints=10 \
            --set train.seed=0 -o "$RUN"
    fi
    mel2mel export acoustic "$LAST" -o "$OUT/$LOSS" -f
done
