#!/usr/bin/env bash
# The libvirt series, patch by patch: build every prefix (one git worktree,
# checked out commit by commit; ninja rebuilds what each patch changes;
# ccache) and run, on each, the libvirt tests the series touches and
# syntax-check -- libvirt expects every commit to build and pass its tests.
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=out/libvirt-src
W=out/libvirt-bisect
TESTS="qemucapabilitiestest qemucaps2xmltest domaincapstest qemuxmlconftest qemuxmlactivetest
       genericxml2xmltest virschematest"
scripts/series.sh --queue libvirt worktree "$W" || exit 1
commits=$(git -C "$SRC" rev-list --reverse upstream-base..HEAD)
total=$(echo "$commits" | wc -w)
i=0
for c in $commits; do
    i=$((i + 1))
    subject=$(git -C "$SRC" log -1 --format=%s "$c")
    echo "bisect-check-libvirt: [$i/$total] $subject"
    git -C "$W" checkout -q --detach "$c" || exit 1
    if ! scripts/build-libvirt.sh "$W"; then
        echo "bisect-check-libvirt: FAILED to build patch $i/$total: $subject" >&2
        exit 1
    fi
    # shellcheck disable=SC2086
    if ! meson test -C "$W/build" --no-rebuild $TESTS >"$W/build/bisect-tests.log" 2>&1 ||
       ! meson test -C "$W/build" --no-rebuild --suite syntax-check >>"$W/build/bisect-tests.log" 2>&1; then
        grep -E "FAIL" "$W/build/bisect-tests.log" | head -n 10 >&2
        echo "bisect-check-libvirt: tests FAILED at patch $i/$total: $subject (log: $W/build/bisect-tests.log)" >&2
        exit 1
    fi
    echo "bisect-check-libvirt: [$i/$total] builds; $(echo $TESTS | wc -w) tests and syntax-check pass"
done
echo "bisect-check-libvirt: all $total prefixes build and pass"
