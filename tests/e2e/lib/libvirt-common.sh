# Shared by the libvirt end-to-end tests (sourced; not a test itself).
#
# TAP helpers, a private virtlogd + libvirtd pair (no systemd here), the
# patched emulator copied where libvirt-qemu can read it, the accelerators
# libvirt-qemu can use, and QMP/XML helpers.  lv_cleanup destroys and
# undefines the domains in $domains and stops exactly the daemons it started.
# The caller sets VIRSH (array) and, before lv_start_daemons, RUN (a
# scratch directory).

n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n $*"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n $*"; }
check() {   # check DESCRIPTION COMMAND...: one TAP line; fails when COMMAND fails
    local desc=$1; shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; return 1; fi
}

domains=()
libvirtd_pid="" virtlogd_pid="" EMUDIR=""

lv_cleanup() {
    local d pid
    for d in "${domains[@]}"; do
        "${VIRSH[@]}" destroy "$d" >/dev/null 2>&1
        "${VIRSH[@]}" undefine "$d" >/dev/null 2>&1
    done
    for pid in $libvirtd_pid $virtlogd_pid; do
        kill "$pid" 2>/dev/null
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null
    done
    libvirtd_pid="" virtlogd_pid=""
    [ -z "$EMUDIR" ] || rm -rf "$EMUDIR"
    EMUDIR=""
}

# lv_refuse_running: bail out when a libvirt daemon we did not start runs
lv_refuse_running() {
    if pgrep -x libvirtd >/dev/null || pgrep -x virtqemud >/dev/null ||
       pgrep -f 'build/src/\.libs/libvirtd|build/src/libvirtd' >/dev/null; then
        echo "Bail out! a libvirtd/virtqemud not started by this test is running"
        exit 1
    fi
}

# lv_copy_emulator SRC: libvirt runs QEMU as libvirt-qemu, which may not
# reach the checkout (e.g. under /root): sets EMULATOR to a readable copy.
lv_copy_emulator() {
    EMUDIR=$(mktemp -d /var/tmp/merge-barriers-libvirt.XXXXXX)
    chmod 755 "$EMUDIR"
    install -m 755 "$1" "$EMUDIR/qemu-system-x86_64"
    EMULATOR=$EMUDIR/qemu-system-x86_64
}

# lv_start_daemons VIRTLOGD LIBVIRTD [PREFIX...]: start both with their pid
# files in $RUN, PREFIX (e.g. a build tree's run script) before each.
lv_start_daemons() {
    local virtlogd=$1 libvirtd=$2; shift 2
    # Their PIDs, read once: each daemon removes its pid file when it exits.
    "$@" "$virtlogd" -d --pid-file "$RUN/virtlogd.pid" &&
        virtlogd_pid=$(cat "$RUN/virtlogd.pid") ||
        { echo "Bail out! virtlogd did not start"; exit 1; }
    "$@" "$libvirtd" -d --pid-file "$RUN/libvirtd.pid" &&
        libvirtd_pid=$(cat "$RUN/libvirtd.pid") ||
        { echo "Bail out! libvirtd did not start"; exit 1; }
    echo "# started virtlogd ($virtlogd_pid) and libvirtd ($libvirtd_pid)"
    for _ in $(seq 100); do
        "${VIRSH[@]}" version >/dev/null 2>&1 && return 0
        sleep 0.2
    done
}

# lv_setup VIRTLOGD LIBVIRTD [PREFIX...]: the common start of a test: cleanup
# on exit, no foreign daemon, a fresh $RUN, $EMULATOR copied, daemons started
lv_setup() {
    trap lv_cleanup EXIT
    lv_refuse_running
    rm -rf "$RUN"; mkdir -p "$RUN"
    lv_copy_emulator "$EMULATOR"
    lv_start_daemons "$@"
}

# lv_accels: sets accels to (qemu) plus kvm when libvirt-qemu can use /dev/kvm
lv_accels() {
    accels=(qemu)
    [ -c /dev/kvm ] || return 0
    # Debian's udev rule gives /dev/kvm to group kvm (libvirt-qemu is in it);
    # without udev it may be root-only.
    if ! runuser -u libvirt-qemu -- test -w /dev/kvm 2>/dev/null; then
        chgrp kvm /dev/kvm && chmod g+rw /dev/kvm &&
            echo "# /dev/kvm: group kvm, mode g+rw (as udev would)"
    fi
    runuser -u libvirt-qemu -- test -w /dev/kvm 2>/dev/null && accels+=(kvm)
    return 0
}

lv_qom_get() {  # NAME PATH PROPERTY: a QOM property of a running domain, as JSON
    "${VIRSH[@]}" qemu-monitor-command "$1" \
        "{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"$2\",\"property\":\"$3\"}}" |
        python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["return"]).replace(" ", ""))'
}

qom_get() {  # prints the merge-barriers list of a running domain, e.g. [1048576]
    lv_qom_get "$1" /machine merge-barriers
}

lv_as_barriers() {  # NAME: the merge barriers of AS "memory" (info mtree -f), e.g. [1048576]
    "${VIRSH[@]}" qemu-monitor-command --hmp "$1" "info mtree -f" |
        python3 -c 'import sys
for l in sys.stdin.read().splitlines():  # all of it: no SIGPIPE for virsh
    if l.startswith(" AS \"memory\","):
        b = l.split("merge barriers:")[1].split() if "merge barriers:" in l else []
        print("[" + ",".join(str(int(a, 16)) for a in b) + "]")
        break'
}

# xml_for FILE TYPE NAME: FILE with our emulator, domain type and name
xml_for() {
    sed -e "s|<emulator>.*</emulator>|<emulator>$EMULATOR</emulator>|" \
        -e "s|<domain type='qemu'|<domain type='$2'|" \
        -e "s|<name>.*</name>|<name>$3</name>|" "$1" > "$RUN/$3.xml"
    echo "$RUN/$3.xml"
}
