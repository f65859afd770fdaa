#!/usr/bin/env bash
# The patch queues: a directory of patches <-> commits in a git work tree.
#   series.sh [--queue qemu|libvirt] apply    create the tree (base commit), apply the patches (git am)
#   series.sh [--queue qemu|libvirt] export   regenerate the patches from the commits on the base
#   series.sh [--queue qemu|libvirt] check    fail, naming the difference, when the two disagree
#   series.sh [--queue qemu|libvirt] worktree DIR
#                                     a git worktree of the tree at DIR (detached at the base),
#                                     with the base's untracked files (bisect-check*.sh)
# Queues:  qemu     patches/          <-> out/qemu-src     (base: Debian's qemu 1:10.2.2+ds-1)
#          libvirt  libvirt-patches/  <-> out/libvirt-src  (base: upstream libvirt 11.3.0)
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
DL=out/downloads
QUEUE=qemu
if [ "${1:-}" = --queue ]; then QUEUE=${2:-}; shift 2 || true; fi
case "$QUEUE" in
# UNTRACKED: files of the base that are kept out of git (see create_base_libvirt)
qemu)    SRC=out/qemu-src PATCHES=patches BASE_TAG=debian-base UNTRACKED="" ;;
libvirt) SRC=out/libvirt-src PATCHES=libvirt-patches BASE_TAG=upstream-base
         UNTRACKED=subprojects/keycodemapdb ;;
*) echo "error: unknown queue '$QUEUE' (qemu or libvirt)" >&2; exit 1 ;;
esac

die() { echo "error: $*" >&2; exit 1; }
g() { git -C "$SRC" "$@"; }

series_files() {
    local p
    for p in "$PATCHES"/[0-9]*.patch; do
        [ -e "$p" ] || continue
        case "${p##*/}" in 0000-*) continue ;; esac
        echo "$p"
    done
}

# Deterministic format-patch output: the same commits always give the same
# bytes (no commit hashes, no git version signature).
export_to() {
    local dir=$1
    mkdir -p "$dir"
    g -c core.abbrev=12 -c diff.renames=true format-patch -q --zero-commit \
        --no-signature --subject-prefix=PATCH --output-directory "$TOP/$dir" \
        "$BASE_TAG..HEAD" >/dev/null
}

# Compare patches/ with an export of the tree; print the differences.
differences() {
    local tmp=$1 p q out=""
    for p in $(series_files); do
        q="$tmp/${p##*/}"
        if [ ! -e "$q" ]; then out+="  only in $PATCHES/: ${p##*/}"$'\n'
        elif ! cmp -s "$p" "$q"; then out+="  differs: ${p##*/}"$'\n'
        fi
    done
    for q in "$tmp"/*.patch; do
        [ -e "$q" ] || continue
        [ -e "$PATCHES/${q##*/}" ] || out+="  only in $SRC: ${q##*/}"$'\n'
    done
    printf '%s' "$out"
}

# commit_base DIR AUTHOR EMAIL MESSAGE [EXCLUDED...]: make DIR a git work tree
# whose first commit (tagged $BASE_TAG, fixed dates: always the same hash for
# the same files) is everything in it but EXCLUDED (also kept out of git's view)
commit_base() {
    local dir=$1 name=$2 email=$3 msg=$4 p; shift 4
    (
        cd "$dir"
        export GIT_AUTHOR_NAME="$name" GIT_AUTHOR_EMAIL="$email"
        export GIT_COMMITTER_NAME="$name" GIT_COMMITTER_EMAIL="$email"
        export GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"
        git init -q -b master .
        printf '%s\n' "$@" >> .git/info/exclude
        git add -A -f .
        for p in "$@"; do
            p=${p#/}; p=${p%/}
            if [ -e "$p" ]; then git rm -r -q --cached "$p"; fi
        done
        git commit -q -m "$msg"
        git tag "$BASE_TAG"
    )
}

create_base() {
    [ "$QUEUE" = libvirt ] && { create_base_libvirt; return; }
    [ -f "$DL/qemu_10.2.2+ds-1.dsc" ] || die "no QEMU source in $DL: run 'make fetch'"
    local tmp=$SRC.tmp
    rm -rf "$tmp"
    echo "series: creating $SRC (dpkg-source -x: Debian's patch queue applied)"
    if ! dpkg-source --no-check -x "$DL/qemu_10.2.2+ds-1.dsc" "$tmp" \
            >out/dpkg-source.log 2>&1; then
        tail -n 5 out/dpkg-source.log >&2; rm -rf "$tmp"
        die "dpkg-source -x failed (log: out/dpkg-source.log)"
    fi
    # Debian's packaging and quilt state are not part of the QEMU tree.
    rm -rf "$tmp/.pc" "$tmp/debian"
    # build trees of the harness (QEMU's .gitignore has /build/ only)
    commit_base "$tmp" "Debian QEMU source" qemu@packages.debian.org \
        "qemu 1:10.2.2+ds-1 (Debian source, dpkg-source -x)" "/build-*/"
    mv "$tmp" "$SRC"
}

# libvirt: the upstream release tarball, as is (its dist files included).
create_base_libvirt() {
    local tarball=$DL/libvirt_11.3.0.orig.tar.xz tmp=$SRC.tmp
    [ -f "$tarball" ] || die "no libvirt source in $DL: run 'make fetch-libvirt'"
    rm -rf "$tmp"; mkdir -p "$tmp"
    echo "series: creating $SRC (libvirt 11.3.0 release tarball)"
    tar -C "$tmp" --strip-components=1 -xf "$tarball" || { rm -rf "$tmp"; die "cannot extract $tarball"; }
    # keycodemapdb is a git submodule upstream: not part of libvirt's own
    # tree, which its syntax-check inspects (git ls-tree HEAD).
    commit_base "$tmp" "libvirt 11.3.0 release" devel@lists.libvirt.org \
        "libvirt 11.3.0 (release tarball libvirt_11.3.0.orig.tar.xz)" \
        /build/ "/$UNTRACKED/"
    mv "$tmp" "$SRC"
}

ensure_identity() {
    g config user.email >/dev/null 2>&1 && return 0
    local n e
    n=$(git config user.name || echo "merge-barriers developer")
    e=$(git config user.email || echo "developer@localhost")
    g config user.name "$n"; g config user.email "$e"
}

am_series() {
    local p n=0 log=out/git-am.log
    for p in $(series_files); do
        n=$((n + 1))
        if ! g am -q --keep-cr "$TOP/$p" >"$log" 2>&1; then
            local files
            files=$(grep -oE '^error: (patch failed: |)[^:]+' "$log" |
                    sed -E 's/^error: (patch failed: )?//' | sort -u | tr '\n' ' ')
            g am --abort >/dev/null 2>&1 || true
            echo "error: patch $p does not apply${files:+ (files: ${files% })} -- see $log" >&2
            return 1
        fi
    done
    echo "series: applied $n patches on $BASE_TAG"
}

series_hash() { cat $(series_files) /dev/null | sha256sum | cut -d' ' -f1; }
tree_hash() {
    local tmp h
    tmp=$(mktemp -d out/.export.XXXXXX)
    export_to "$tmp"
    h=$(cat "$tmp"/*.patch /dev/null 2>/dev/null | sha256sum | cut -d' ' -f1)
    rm -rf "$tmp"
    echo "$h"
}
record_state() { series_hash > "$SRC/.git/merge-barriers-series"; }
count() { local n; n=$(series_files | wc -l); echo "$n patches"; }

cmd_apply() {
    [ -d "$SRC/.git" ] || create_base
    ensure_identity
    local state="$SRC/.git/merge-barriers-series" want have applied=""
    want=$(series_hash)
    [ -f "$state" ] && applied=$(cat "$state")
    if [ "$applied" = "$want" ]; then
        # patches/ is what was applied or exported last: the tree is yours.
        if [ "$(tree_hash)" != "$want" ]; then
            echo "series: note: $SRC has commits not exported to $PATCHES/ ('make export')"
        fi
        return 0
    fi
    have=$(tree_hash)
    if [ "$have" = "$want" ]; then
        record_state
        echo "series: $SRC is up to date with $PATCHES/"
        return 0
    fi
    # patches/ changed (e.g. git pull): re-apply, unless that would lose work.
    if [ -n "$(g status --porcelain --untracked-files=no)" ]; then
        die "$PATCHES/ changed, but $SRC has uncommitted changes: commit them and 'make export', or discard them; then re-run"
    fi
    if [ "$have" != "${applied:-$(cat /dev/null | sha256sum | cut -d' ' -f1)}" ]; then
        die "$PATCHES/ changed, but $SRC has commits that are not in $PATCHES/: 'make export' keeps them (then merge), 'git -C $SRC reset --hard $BASE_TAG' drops them"
    fi
    local prev
    prev=$(g rev-parse HEAD)
    g reset -q --hard "$BASE_TAG"
    if ! am_series; then
        g reset -q --hard "$prev"
        exit 1
    fi
    record_state
}

cmd_export() {
    [ -d "$SRC/.git" ] || die "no $SRC: run 'make apply'"
    if [ -n "$(g status --porcelain --untracked-files=no)" ]; then
        echo "warning: $SRC has uncommitted changes; they are not exported" >&2
    fi
    local tmp p q changed=0
    mkdir -p "$PATCHES"
    tmp=$(mktemp -d out/.export.XXXXXX)
    export_to "$tmp"
    for p in $(series_files); do
        [ -e "$tmp/${p##*/}" ] || { rm -f "$p"; echo "  removed ${p##*/}"; changed=1; }
    done
    for q in "$tmp"/*.patch; do
        [ -e "$q" ] || continue
        p="$PATCHES/${q##*/}"
        if ! cmp -s "$q" "$p"; then
            cp "$q" "$p"; echo "  wrote ${p##*/}"; changed=1
        fi
    done
    rm -rf "$tmp"
    record_state
    [ $changed = 1 ] || echo "series: $PATCHES/ already matches $SRC"
}

cmd_check() {
    [ -d "$SRC/.git" ] || die "no $SRC: run 'make apply'"
    local tmp d rc=0
    tmp=$(mktemp -d out/.export.XXXXXX)
    export_to "$tmp"
    d=$(differences "$tmp"); rm -rf "$tmp"
    if [ -n "$d" ]; then
        echo "$PATCHES/ and $SRC disagree:"; printf '%s' "$d"; rc=1
    fi
    if [ -n "$(g status --porcelain --untracked-files=no)" ]; then
        echo "$SRC has uncommitted changes:"; g status --short --untracked-files=no | sed 's/^/  /'
        rc=1
    fi
    [ $rc = 0 ] && echo "series: $PATCHES/ matches $SRC ($(count))"
    return $rc
}

cmd_worktree() {
    local w=${1:?usage: $0 [--queue Q] worktree DIR} p
    [ -d "$SRC/.git" ] || die "no $SRC: run 'make apply'"
    [ -e "$w/.git" ] && return 0
    g worktree prune
    g worktree add -q --detach "$TOP/$w" "$BASE_TAG" || die "cannot create the worktree $w"
    for p in $UNTRACKED; do
        mkdir -p "$w/$(dirname "$p")"
        cp -a "$SRC/$p" "$w/$p"
    done
}

case "${1:-}" in
apply) cmd_apply ;;
worktree) cmd_worktree "${2:-}" ;;
export) cmd_export ;;
check) cmd_check ;;
*) die "usage: $0 [--queue qemu|libvirt] apply|export|check|worktree DIR" ;;
esac
