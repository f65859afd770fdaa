#!/usr/bin/env bash
# QEMU's checkpatch.pl on every patch of the series, as TAP.
# Errors fail; warnings are listed (each must be explained in its commit message).
set -uo pipefail
cd "$(dirname "$0")/.."
CHECKPATCH=out/qemu-src/scripts/checkpatch.pl
patches=()
for p in patches/[0-9]*.patch; do
    case "${p##*/}" in 0000-*) continue ;; esac
    patches+=("$p")
done
echo "1..${#patches[@]}"
n=0 rc=0
for p in "${patches[@]}"; do
    n=$((n + 1))
    out=$("$CHECKPATCH" -q "$p" 2>&1); st=$?
    if [ $st -eq 0 ]; then
        echo "ok $n ${p##*/}"
    else
        echo "not ok $n ${p##*/}"; rc=1
    fi
    [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/# /'
done
exit $rc
