#!/usr/bin/env bash
# End-to-end: merge barriers as a native libvirt domain feature, with the
# patched libvirt (libvirt-patches/, built in out/libvirt-src/build) and the
# patched QEMU; the barriers never come through <qemu:commandline>.
#
# Starts the build tree's virtlogd and libvirtd (through its 'run' script,
# no systemd here) and checks what 'virsh domcapabilities' reports.  Defines
# and starts the domains of examples/libvirt/native/; checks that the domain
# is not tainted, the QEMU command line libvirt built, the XML libvirt keeps,
# and the barriers QEMU has (qom-get over QMP and 'info mtree -f', after the
# taint check: a monitor command taints).  Then checks what libvirt itself
# refuses: an address that is no multiple of 4 KiB, and the element with an
# unpatched QEMU (Debian's qemu-system-x86_64) -- both at 'virsh define' --,
# and a domain whose emulator became the unpatched QEMU after 'define', at
# 'virsh start'; each with libvirt's message, and no QEMU started.  Last, a
# real vfio-user peer counts the DMA unmaps SeaBIOS causes in a libvirt
# domain without and with the element.  Speaks TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
TOP=$PWD
LVB=$TOP/out/libvirt-src/build
EMULATOR=$TOP/out/qemu-system-x86_64
UNPATCHED_QEMU=/usr/bin/qemu-system-x86_64
RUN=$TOP/out/libvirt-native-test
LOGDIR=/var/log/libvirt/qemu
VIRSH=("$LVB/run" "$LVB/tools/virsh" -q -c qemu:///system)

# Debian's libvirt packages: the libvirt-qemu user, /etc/libvirt, and an
# unpatched QEMU to check the capability against.
scripts/deps.sh libvirt >&2 || { echo "Bail out! cannot install libvirt"; exit 1; }
[ -x "$EMULATOR" ] || { echo "Bail out! no $EMULATOR: run make"; exit 1; }
[ -x "$LVB/src/libvirtd" ] || { echo "Bail out! no patched libvirt in $LVB: run make build-libvirt"; exit 1; }
# Debian's QEMU, without the property (checked, not assumed)
have_unpatched=false
if [ -x "$UNPATCHED_QEMU" ] && ! "$UNPATCHED_QEMU" -machine pc,help 2>/dev/null | grep -q merge-barriers; then
    have_unpatched=true
fi

. tests/e2e/lib/libvirt-common.sh
lv_setup "$LVB/src/virtlogd" "$LVB/src/libvirtd" "$LVB/run"
check "patched libvirtd ($("$LVB/run" "$LVB/src/libvirtd" --version | awk '{print $3}'), build tree) answers" \
    bash -c '"$@" >/dev/null' _ "${VIRSH[@]}" version
lv_accels

# What 'virsh domcapabilities' reports, e.g. "<merge-barriers supported='yes'/>"
domcaps_mb() {  # EMULATOR MACHINE
    "${VIRSH[@]}" domcapabilities --virttype qemu --emulatorbin "$1" --machine "$2" |
        grep -o "<merge-barriers supported='[a-z]*'/>"
}
while read -r label emu machine want; do
    [ -x "$emu" ] || { ok "# SKIP domcapabilities of $emu: missing"; continue; }
    got=$(domcaps_mb "$emu" "$machine")
    check "domcapabilities, $label QEMU, $machine: merge-barriers supported='$want' (got ${got:-nothing})" \
        test "$got" = "<merge-barriers supported='$want'/>"
done <<EOF_CAPS
patched $EMULATOR pc-q35-10.2 yes
patched $EMULATOR pc-i440fx-10.1 yes
patched $EMULATOR microvm no
unpatched $UNPATCHED_QEMU q35 no
EOF_CAPS

# barriers_of < XML: "none" (no element) or the element's addresses, e.g. "[0x100000]"
barriers_of() {
    python3 -c 'import sys, xml.etree.ElementTree as ET
mb = ET.parse(sys.stdin).getroot().find("features/merge-barriers")
print("none" if mb is None else "[" + ",".join(b.get("address") for b in mb) + "]")'
}

# Valid domains: define, start, no taint, command line, XML, qom-get.
while read -r example arg expect; do
    for accel in "${accels[@]}"; do
        name=mb-native-${example%.xml}-$accel
        domains+=("$name")
        log=$LOGDIR/$name.log
        rm -f "$log"    # libvirt appends: a taint of an earlier run must not count
        xml=$(xml_for "examples/libvirt/native/$example" "$accel" "$name")
        if ! out=$("${VIRSH[@]}" define "$xml" 2>&1); then
            not_ok "$example ($accel): virsh define: $out"; continue
        fi
        if ! out=$("${VIRSH[@]}" start "$name" 2>&1); then
            not_ok "$example ($accel): virsh start: $out"
            "${VIRSH[@]}" undefine "$name" >/dev/null 2>&1; continue
        fi
        check "$example ($accel): domain not tainted" \
            bash -c '! grep -q "is tainted" "$0"' "$log"
        if [ "$arg" = - ]; then
            check "$example ($accel): no merge-barriers option on the QEMU command line" \
                bash -c '! grep -qE "[,=]merge-barriers[.=]" "$0"' "$log"
        else
            # libvirt logs one argument per line ("ARG \\")
            check "$example ($accel): -machine has ',$arg'" \
                awk -v want=",$arg" '/^-machine pc-/ && index($0, want) { f = 1 } END { exit !f }' "$log"
        fi
        check "$example ($accel): dumpxml keeps the element as defined ($(barriers_of <"$xml"))" \
            test "$("${VIRSH[@]}" dumpxml --inactive "$name" | barriers_of)" = "$(barriers_of <"$xml")"
        got=$(qom_get "$name")
        check "$example ($accel): qom-get merge-barriers = $expect (got $got)" \
            test "$got" = "$expect"
        # ... and the system memory view is rendered with them
        want=$(python3 -c 'import json, sys
l = json.loads(sys.argv[1])
print("AS \"memory\", root: system" + (", merge barriers: " + " ".join("%016x" % a for a in l) if l else ""))' "$expect")
        line=$("${VIRSH[@]}" qemu-monitor-command --hmp "$name" "info mtree -f" |
               tr -d '\r' | grep -m1 'AS "memory"' | sed 's/^ *//')
        check "$example ($accel): info mtree -f: '$want'" test "$line" = "$want" ||
            echo "# got: '$line'"
        "${VIRSH[@]}" destroy "$name" >/dev/null 2>&1
        check "$example ($accel): destroy and undefine" "${VIRSH[@]}" undefine "$name"
    done
done <<'EOF_CASES'
pc-i440fx-10.1-barrier.xml merge-barriers.0=0x100000, [1048576]
pc-q35-10.2-none.xml merge-barriers=, []
pc-q35-10.1-two.xml merge-barriers.0=0x100000,merge-barriers.1=0x10000000, [1048576,268435456]
pc-q35-10.2-default.xml - [1048576]
EOF_CASES

# refused NAME XML MESSAGE: 'virsh define' fails with MESSAGE, nothing defined or running
refused() {
    local name=$1 xml=$2 msg=$3 out
    domains+=("$name")
    if out=$("${VIRSH[@]}" define "$xml" 2>&1); then
        not_ok "$name: virsh define succeeded"
    else
        check "$name: virsh define fails with libvirt's error '$msg'" grep -qF "$msg" <<<"$out"
        check "$name: libvirt's own error, not QEMU's" bash -c '! grep -qi "qemu-system\|qemu unexpectedly" <<<"$0"' "$out"
    fi
    check "$name: not defined" bash -c '! "$@" dominfo '"$name"' >/dev/null 2>&1' _ "${VIRSH[@]}"
    # (the [x] keeps pgrep from matching this check's own command line)
    check "$name: no QEMU process" bash -c "! pgrep -f 'guest=${name%?}[${name: -1}]' >/dev/null"
}

refused mb-native-bad-address \
    "$(xml_for examples/libvirt/native/pc-i440fx-10.2-bad-address.xml qemu mb-native-bad-address)" \
    "merge barrier address '0x100800' is not a multiple of 4 KiB"

if $have_unpatched; then
    xml=$(xml_for examples/libvirt/native/pc-q35-10.1-two.xml qemu mb-native-unpatched)
    sed -i -e "s|<emulator>.*</emulator>|<emulator>$UNPATCHED_QEMU</emulator>|" \
        -e "s|machine='pc-q35-10.1'|machine='q35'|" "$xml"
    echo "# unpatched QEMU: $("$UNPATCHED_QEMU" --version | head -n 1)"
    refused mb-native-unpatched "$xml" "merge barriers are not supported by this QEMU binary"
else
    ok "# SKIP unpatched QEMU: $UNPATCHED_QEMU missing or has merge-barriers"
fi

# At start: a domain defined with the patched QEMU, whose emulator has since
# become an unpatched one (a package downgrade): 'virsh start' re-probes the
# binary and refuses with libvirt's message instead of running QEMU.
if $have_unpatched; then
    name=mb-native-downgraded
    domains+=("$name")
    mkdir -p "$EMUDIR/downgraded"
    install -m 755 "$EMULATOR" "$EMUDIR/downgraded/qemu-system-x86_64"
    xml=$(xml_for examples/libvirt/native/pc-q35-10.1-two.xml qemu "$name")
    # a machine type both QEMUs have
    sed -i -e "s|<emulator>.*</emulator>|<emulator>$EMUDIR/downgraded/qemu-system-x86_64</emulator>|" \
        -e "s|machine='pc-q35-10.1'|machine='pc-q35-10.0'|" "$xml"
    check "$name: virsh define with the patched QEMU" bash -c '"$@" >/dev/null' _ "${VIRSH[@]}" define "$xml"
    install -m 755 "$UNPATCHED_QEMU" "$EMUDIR/downgraded/qemu-system-x86_64"
    if out=$("${VIRSH[@]}" start "$name" 2>&1); then
        not_ok "$name: virsh start succeeded with the unpatched QEMU"
    else
        check "$name: virsh start fails with libvirt's error" \
            grep -qF "merge barriers are not supported by this QEMU binary" <<<"$out"
    fi
    check "$name: no QEMU process" bash -c "! pgrep -f 'guest=mb-native-downgrade[d]' >/dev/null"
    "${VIRSH[@]}" undefine "$name" >/dev/null 2>&1
else
    ok "# SKIP start with a downgraded QEMU: $UNPATCHED_QEMU missing or has merge-barriers"
fi

# A real peer: libvfio-user's gpio-pci-idio-16 sample server as a vfio-user
# device of a pc-q35-10.1 domain (no barriers by default) while SeaBIOS
# boots (to "No bootable device", seen on the debug console), without and
# with the native element.  libvirt has no vfio-user device, so the device
# and the debug console come through <qemu:commandline> (that taints the
# domain; the barrier does not come that way).  Counted like
# scripts/dma_churn.py: the server's removals of DMA regions over RAM above
# 1 MiB.  TCG, and KVM where usable.
SERVER=$TOP/out/libvfio-user-build/samples/gpio-pci-idio-16
scripts/build-vfio-user.sh >&2 || echo "# build-vfio-user.sh failed"
vfu_domain() {  # NAME DIR FEATURES TYPE: a pc-q35-10.1 domain, 2 GiB of shared memfd RAM
    cat <<EOX
<domain type='$4' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$1</name>
  <memory unit='GiB'>2</memory>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc-q35-10.1'>hvm</type></os>
  <features>$3</features>
  <devices><emulator>$EMULATOR</emulator></devices>
  <qemu:commandline>
    <qemu:arg value='-device'/>
    <qemu:arg value='{"driver":"vfio-user-pci","id":"vfio0","socket":{"path":"$2/vfio-user.sock","type":"unix"}}'/>
    <qemu:arg value='-chardev'/>
    <qemu:arg value='file,id=dbg,path=$2/debugcon.log'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='isa-debugcon,iobase=0x402,chardev=dbg'/>
  </qemu:commandline>
</domain>
EOX
}
vfu_removals() {  # SERVER_LOG: removals of DMA regions over RAM above 1 MiB
    python3 -c 'import sys; sys.path.insert(0, "scripts"); import dma_churn
print(dma_churn.parse_server_log(open(sys.argv[1], errors="replace").read())[0])' "$1"
}
if [ -x "$SERVER" ]; then
    while read -r label want features; do
      for accel in "${accels[@]}"; do
        name=mb-native-vfio-user-$label-$accel
        domains+=("$name")
        dir=$EMUDIR/$label-$accel
        mkdir -p "$dir"; chmod 777 "$dir"
        "$SERVER" -v "$dir/vfio-user.sock" >"$dir/server.log" 2>&1 &
        srv=$!
        for _ in $(seq 200); do [ -S "$dir/vfio-user.sock" ] && break; sleep 0.05; done
        chmod 666 "$dir/vfio-user.sock" 2>/dev/null
        vfu_domain "$name" "$dir" "$features" "$accel" >"$RUN/$name.xml"
        out=""
        if "${VIRSH[@]}" define "$RUN/$name.xml" >/dev/null &&
           out=$("${VIRSH[@]}" start "$name" 2>&1); then
            for _ in $(seq 600); do
                grep -qs "No bootable device" "$dir/debugcon.log" && break
                sleep 0.1
            done
            check "vfio-user, $label ($accel): SeaBIOS reached 'No bootable device'" \
                grep -qs "No bootable device" "$dir/debugcon.log"
            "${VIRSH[@]}" destroy "$name" >/dev/null 2>&1
            got=$(vfu_removals "$dir/server.log")
            if [ "$want" = 0 ]; then
                check "vfio-user, $label ($accel): 0 DMA unmaps of RAM above 1 MiB (got $got)" test "$got" = 0
            else
                check "vfio-user, $label ($accel): DMA unmaps of RAM above 1 MiB > 0 (got $got)" test "$got" -gt 0
            fi
        else
            not_ok "vfio-user, $label ($accel): define/start: ${out:-define failed}"
        fi
        "${VIRSH[@]}" undefine "$name" >/dev/null 2>&1
        kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null
      done
    done <<'EOF_VFU'
no-element >0
barrier-1M 0 <merge-barriers><barrier address='0x100000'/></merge-barriers>
EOF_VFU
else
    ok "# SKIP vfio-user peer: no $SERVER (scripts/build-vfio-user.sh)"
fi

if [ ${#accels[@]} -eq 1 ]; then
    ok "# SKIP domain type kvm: /dev/kvm is not usable by libvirt-qemu on this machine"
fi
lv_cleanup
trap - EXIT
check "daemons stopped: no libvirtd or virtlogd left" \
    bash -c '! pgrep -f "src/libvirt[d]|src/virtlog[d]" >/dev/null && ! pgrep -x libvirtd >/dev/null'
check "no test domain left running" bash -c '! pgrep -f "guest=mb-nativ[e]-" >/dev/null'
echo "1..$n"
[ $failed -eq 0 ]
