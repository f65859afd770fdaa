#!/usr/bin/env bash
# Private apt configuration for this project.
#
# It never edits the system's apt sources: it adds two entries of its own,
# bookworm-backports (binary packages) and deb-src for sid (the pinned QEMU
# source package) and trixie (the pinned libvirt 11.3.0 tarball), both on the
# mirror the system already uses, and keeps its own package lists under
# $APT_DIR.
# Usage (sourced):
#   . scripts/apt-private.sh; apt_private_setup; apt-get "${APT_OPTS[@]}" ...
set -euo pipefail

APT_DIR=${APT_DIR:-$PWD/out/apt}

die() { echo "error: $*" >&2; exit 1; }

# The URI of the Debian archive the system installs bookworm from, read from
# apt's own view of its configuration (one-line and deb822 formats alike).
apt_system_mirror() {
    local codename uri
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' |
          awk -v c="$codename" '$2 == c && $3 == "deb" { print $1; exit }')
    [ -n "$uri" ] || die "no Debian mirror for '$codename' in the system's apt sources"
    echo "${uri%/}"
}

apt_private_setup() {
    local mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    mirror=$(apt_system_mirror)
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" \
             "$APT_DIR/sources.list.d"
    # System entries first (by reference, untouched), then ours.
    : > "$APT_DIR/sources.list"
    [ -f /etc/apt/sources.list ] && cat /etc/apt/sources.list >> "$APT_DIR/sources.list"
    find "$APT_DIR/sources.list.d" -mindepth 1 -delete
    local f
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] && ln -s "$f" "$APT_DIR/sources.list.d/system-${f##*/}"
    done
    cat > "$APT_DIR/sources.list.d/merge-barriers.sources" <<EOS
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: $keyring

Types: deb-src
URIs: $mirror
Suites: sid trixie
Components: main
Signed-By: $keyring
EOS
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
        -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
        -o "Dir::State::Lists=$APT_DIR/lists"
        -o "Dir::Cache=$APT_DIR/cache"
        -o "Dir::Cache::pkgcache="
        -o "Dir::Cache::srcpkgcache="
        -o "APT::Get::List-Cleanup=0"
    )
}

apt_private_update() {
    echo "apt: updating private package lists (system mirror + bookworm-backports + sid/trixie deb-src)"
    if ! apt-get "${APT_OPTS[@]}" -q update >"$APT_DIR/update.log" 2>&1 ||
       grep -qE '^(W|E): (Failed|Some index files failed)' "$APT_DIR/update.log"; then
        tail -n 5 "$APT_DIR/update.log" >&2
        die "apt update failed: Debian mirror unreachable? (log: $APT_DIR/update.log)"
    fi
}
