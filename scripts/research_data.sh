#!/usr/bin/env bash
# Rebuild the datasets the shipped models were trained and measured on (docs/MODELS.md,
# docs/SPACE100.md), and fetch the reserved real-MIDI evaluation set, under ROOT (default /work):
#   ROOT/data/perf10       the 10-instrument performance corpus (5,910 items; 19 min on 2 cores)
#   ROOT/data/perf10s      perf10 and 100 + 20 (test) solo lines (7,110 items; hard links to
#                          perf10's items, then 6 min on one core)
#   ROOT/data/perf10v      perf10s and a second pair of performances of every train score and
#                          180 more train textures (10,780 items; hard links to perf10s's
#                          items, then 31 min on one core)
#   ROOT/data/chorale-test the chorale test split (110 items)
#   ROOT/data/space100b    the 100-instrument corpus (3,366 items), with --space100
#   ROOT/data/space100c    space100b and its train split dealt again, 8 instruments per piece
#                          (6,599 items; hard links, then 8 min on two cores), with --space100
#   ROOT/data/space100d    space100c and its train split dealt a third time, 10 instruments per
#                          piece (10,314 items; hard links, then 13 min on one core), with --space100
#   ROOT/data/space100e    space100d and its train split dealt a fourth time, 12 instruments per
#                          piece (14,341 items; hard links, then 16 min on one core), with --space100
#   ROOT/evalmidi          reserved real MIDI: evaluation only, never train or tune on it
# Each build resumes where an interrupted one stopped. Usage:
#   bash scripts/research_data.sh [ROOT] [--space100]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=/work
SPACE100=0
for arg in "$@"; do
    case "$arg" in
        --space100) SPACE100=1 ;;
        *) ROOT=$arg ;;
    esac
done
mkdir -p "$ROOT/data"
link_copy() {  # link_copy FROM TO: TO shares FROM's finished items and writes its own manifest
    if [ ! -d "$ROOT/data/$2" ]; then
        cp -al "$ROOT/data/$1" "$ROOT/data/$2"
        rm "$ROOT/data/$2/manifest.json" && cp "$ROOT/data/$1/manifest.json" "$ROOT/data/$2/"
    fi
}
mel2mel data build -o "$ROOT/data/perf10" --variants 2 --textures 120 --strikes 60 --solos 0 \
    --max-seconds 15 --workers 2 --no-progress
link_copy perf10 perf10s
mel2mel data build -o "$ROOT/data/perf10s" --variants 2 --textures 120 --strikes 60 --solos 100 \
    --max-seconds 15 --workers 2 --no-progress
mel2mel data build -o "$ROOT/data/perf10s" --variants 2 --textures 120 --strikes 60 --solos 300 \
    --max-seconds 15 --workers 2 --no-progress --split test
link_copy perf10s perf10v
mel2mel data build -o "$ROOT/data/perf10v" --variants 4 --textures 300 --strikes 60 --solos 100 \
    --max-seconds 15 --workers 2 --no-progress --split train
mel2mel data build -o "$ROOT/data/chorale-test" --limit 67 --split test --variants 0 \
    --textures 0 --strikes 0 --solos 0 --workers 2 --no-progress
if [ "$SPACE100" = 1 ]; then
    mel2mel data build -o "$ROOT/data/space100b" --instruments space100 --variants 2 \
        --textures 120 --strikes 30 --solos 0 --max-seconds 10 --instruments-per-piece 6 --workers 2 \
        --no-progress
    # the train split dealt again and again, each deal beside the last (hard links)
    for deal in "space100b space100c 8" "space100c space100d 10" "space100d space100e 12"; do
        read -r from to per_piece <<< "$deal"
        link_copy "$from" "$to"
        mel2mel data build -o "$ROOT/data/$to" --instruments space100 --variants 2 \
            --textures 120 --strikes 30 --solos 0 --max-seconds 10 \
            --instruments-per-piece "$per_piece" --split train --workers 2 --no-progress
    done
fi
bash benchmarks/reserved_midi.sh "$ROOT/evalmidi"
