#!/usr/bin/env bash
# End-to-end: merge barriers through libvirt domain XML passthrough
# (<qemu:commandline>), with a real libvirtd (11.3 from bookworm-backports).
#
# Starts its own virtlogd and libvirtd (no systemd here), defines and starts
# the domains of examples/libvirt/ with the patched emulator, reads the
# property back over QMP (virsh qemu-monitor-command), checks the QEMU command
# line in the domain log, and checks that a bad value makes "virsh start"
# fail with QEMU's error and leaves nothing running.  Cleans up the domains
# and stops exactly the daemons it started, also on failure.  Speaks TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
TOP=$PWD
EMULATOR=$TOP/out/qemu-system-x86_64
RUN=$TOP/out/libvirt-test
VIRSH=(virsh -q -c qemu:///system)
LOGDIR=/var/log/libvirt/qemu

scripts/deps.sh libvirt >&2 || { echo "Bail out! cannot install libvirt"; exit 1; }
[ -x "$EMULATOR" ] || { echo "Bail out! no $EMULATOR: run make"; exit 1; }

. tests/e2e/lib/libvirt-common.sh
lv_setup virtlogd libvirtd
check "libvirtd $(libvirtd --version | awk '{print $3}') answers" \
    bash -c '"$@" >/dev/null' _ "${VIRSH[@]}" version
lv_accels

# Valid domains: start, read the property back, check the command line.
# qom-get lists the machine's barriers; with merge-layout=latest the TSEG
# barrier comes only when firmware with SMM enables TSEG (libvirt-native.sh
# boots OVMF Secure Boot for that).
while read -r example arg expect; do
    for accel in "${accels[@]}"; do
        name=mb-test-${example%.xml}-$accel
        domains+=("$name")
        xml=$(xml_for "examples/libvirt/$example" "$accel" "$name")
        if ! "${VIRSH[@]}" define "$xml" >/dev/null; then
            not_ok "$example ($accel): virsh define"; continue
        fi
        if ! out=$("${VIRSH[@]}" start "$name" 2>&1); then
            not_ok "$example ($accel): virsh start: $out"
            "${VIRSH[@]}" undefine "$name" >/dev/null 2>&1; continue
        fi
        got=$(qom_get "$name")
        want=$expect
        check "$example ($accel): qom-get merge-barriers = $want (got $got)" \
            test "$got" = "$want"
        # libvirt logs one argument per line ("ARG \\"); ours comes last.
        check "$example ($accel): domain log has '-machine $arg' after libvirt's -machine" \
            awk -v want="-machine $arg" '
                /^-machine pc-/ { own = NR }
                { line = $0; sub(/ \\$/, "", line) }
                line == want && own && NR > own { found = 1 }
                END { exit !found }' "$LOGDIR/$name.log"
        check "$example ($accel): tainted custom-argv" \
            grep -q "custom-argv" "$LOGDIR/$name.log"
        "${VIRSH[@]}" destroy "$name" >/dev/null 2>&1
        check "$example ($accel): destroy and undefine" "${VIRSH[@]}" undefine "$name"
    done
done <<'EOF'
pc-i440fx-10.1-add-barrier.xml merge-barriers=1M [1048576]
pc-q35-10.2-no-barriers.xml merge-barriers= []
pc-q35-10.1-two-barriers.xml merge-barriers.0=1M,merge-barriers.1=256M [1048576,268435456]
pc-q35-10.1-latest-layout.xml merge-layout=latest [1048576]
EOF

# A bad value: virsh start fails with QEMU's message; nothing keeps running.
name=mb-test-bad
domains+=("$name")
xml=$(xml_for examples/libvirt/pc-i440fx-10.2-bad-value.xml qemu "$name")
"${VIRSH[@]}" define "$xml" >/dev/null
if out=$("${VIRSH[@]}" start "$name" 2>&1); then
    not_ok "bad value: virsh start succeeded"
else
    msg="merge-barriers: merge barrier 0x100800 is not a multiple of 0x10000 (64 KiB: the largest host page a guest can migrate to)"
    check "bad value: virsh start fails with QEMU's error" \
        grep -qF "$msg" <<<"$out"
    check "bad value: the error is in the domain log" grep -qF "$msg" "$LOGDIR/$name.log"
fi
check "bad value: domain is shut off" \
    test "$("${VIRSH[@]}" domstate "$name" 2>/dev/null)" = "shut off"
check "bad value: no QEMU process left" bash -c "! pgrep -f 'guest=mb-test-ba[d]' >/dev/null"
"${VIRSH[@]}" undefine "$name" >/dev/null 2>&1

if [ ${#accels[@]} -eq 1 ]; then
    ok "# SKIP domain type kvm: /dev/kvm is not usable by libvirt-qemu on this machine"
fi
lv_cleanup
trap - EXIT
check "daemons stopped: no libvirtd or virtlogd left" \
    bash -c '! pgrep -x libvirtd >/dev/null && ! pgrep -x virtlogd >/dev/null'
check "no test domain left running" bash -c '! pgrep -f "guest=mb-tes[t]-" >/dev/null'
echo "1..$n"
[ $failed -eq 0 ]
