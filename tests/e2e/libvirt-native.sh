#!/usr/bin/env bash
# End-to-end: merge barriers as a native libvirt domain feature, with the
# patched libvirt (libvirt-patches/, built in out/libvirt-src/build) and the
# patched QEMU; the barriers never come through <qemu:commandline>.
#
# Starts the build tree's virtlogd and libvirtd (through its 'run' script,
# no systemd here) and checks what 'virsh domcapabilities' reports.  Defines
# and starts the domains of examples/libvirt/native/ (the intent forms
# layout='latest' and layout='none' first, then explicit addresses); checks
# that the domain is not tainted, the QEMU command line libvirt built, the
# XML libvirt keeps, and the barriers QEMU has (qom-get over QMP and 'info
# mtree -f', after the taint check: a monitor command taints).  Then checks
# what libvirt itself refuses at 'virsh define' (an address of zero; the
# element with an unpatched QEMU) and at 'virsh start' (a domain
# whose emulator became the unpatched QEMU after 'define'), each with
# libvirt's message and no QEMU started, and what it leaves to QEMU (an
# address that is no multiple of 64 KiB: QEMU's message at start).
# Last, a real vfio-user peer counts the DMA unmaps firmware causes in a
# libvirt domain: SeaBIOS on pc-q35-10.1 without and with an explicit
# barrier, and OVMF with Secure Boot (SMM) on pc-q35-10.1 without the
# element and with layout='latest' for two <memory> sizes, with no address
# anywhere in the XML.  Speaks TAP.
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

# What 'virsh domcapabilities' reports, on one line: "supported='yes'
# layout=latest,none" (the values of <enum name='layout'>), "supported='no'"
domcaps_mb() {  # EMULATOR MACHINE
    "${VIRSH[@]}" domcapabilities --virttype qemu --emulatorbin "$1" --machine "$2" |
        python3 -c 'import sys, xml.etree.ElementTree as ET
mb = ET.fromstring(sys.stdin.read()).find("features/merge-barriers")
if mb is not None:
    values = [v.text for v in mb.findall("enum[@name=\"layout\"]/value")]
    print("supported=%r" % mb.get("supported") +
          (" layout=" + ",".join(values) if values else ""))'
}
while read -r label emu machine want; do
    [ -x "$emu" ] || { ok "# SKIP domcapabilities of $emu: missing"; continue; }
    got=$(domcaps_mb "$emu" "$machine")
    expect="supported='$want'"
    [ "$want" = yes ] && expect="$expect layout=latest,none"
    check "domcapabilities, $label QEMU, $machine: merge-barriers $expect (got ${got:-nothing})" \
        test "$got" = "$expect"
done <<EOF_CAPS
patched $EMULATOR pc-q35-10.2 yes
patched $EMULATOR pc-i440fx-10.1 yes
patched $EMULATOR microvm no
unpatched $UNPATCHED_QEMU q35 no
EOF_CAPS

# barriers_of < XML: "none" (no element), the element's layout, e.g.
# "layout=latest", or its addresses, e.g. "[0x100000]"
barriers_of() {
    python3 -c 'import sys, xml.etree.ElementTree as ET
mb = ET.parse(sys.stdin).getroot().find("features/merge-barriers")
print("none" if mb is None else "layout=" + mb.get("layout") if mb.get("layout")
      else "[" + ",".join(b.get("address") for b in mb) + "]")'
}

# Valid domains: define, start, no taint, command line, XML, qom-get.
# qom-get lists the machine's barriers; with layout='latest' the TSEG
# barrier comes only when firmware with SMM enables TSEG (the OVMF Secure
# Boot rows below).
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
        want_qom=$expect
        check "$example ($accel): qom-get merge-barriers = $want_qom (got $got)" \
            test "$got" = "$want_qom"
        # ... and the system memory view is rendered with them
        want=$(python3 -c 'import json, sys
l = json.loads(sys.argv[1])
print("AS \"memory\", root: system" + (", merge barriers: " + " ".join("%016x" % a for a in l) if l else ""))' "$want_qom")
        line=$("${VIRSH[@]}" qemu-monitor-command --hmp "$name" "info mtree -f" |
               tr -d '\r' | grep -m1 'AS "memory"' | sed 's/^ *//')
        check "$example ($accel): info mtree -f: '$want'" test "$line" = "$want" ||
            echo "# got: '$line'"
        "${VIRSH[@]}" destroy "$name" >/dev/null 2>&1
        check "$example ($accel): destroy and undefine" "${VIRSH[@]}" undefine "$name"
    done
done <<'EOF_CASES'
pc-q35-10.1-latest.xml merge-layout=latest [1048576]
pc-q35-10.2-none.xml merge-layout=none []
pc-i440fx-10.1-barrier.xml merge-barriers.0=0x100000, [1048576]
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

refused mb-native-zero \
    "$(xml_for examples/libvirt/native/pc-i440fx-10.2-zero.xml qemu mb-native-zero)" \
    "Invalid value for attribute 'address' in element 'barrier': Zero is not permitted"

# refused_at_start NAME XML MESSAGE WHOSE: 'virsh define' succeeds, 'virsh
# start' fails with MESSAGE (WHOSE: "libvirt's" or "QEMU's"), no QEMU is left
refused_at_start() {
    local name=$1 xml=$2 msg=$3 whose=$4 out
    domains+=("$name")
    check "$name: virsh define" bash -c '"$@" >/dev/null' _ "${VIRSH[@]}" define "$xml"
    [ -n "${before_start:-}" ] && $before_start
    if out=$("${VIRSH[@]}" start "$name" 2>&1); then
        not_ok "$name: virsh start succeeded"
    else
        check "$name: virsh start fails with $whose message '$msg'" grep -qF "$msg" <<<"$out"
    fi
    check "$name: no QEMU process" bash -c "! pgrep -f 'guest=${name%?}[${name: -1}]' >/dev/null"
    "${VIRSH[@]}" undefine "$name" >/dev/null 2>&1
}

# Left to QEMU: its 64 KiB alignment.  libvirt defines the domain (it does not
# check QEMU's limits); QEMU refuses to start with its own message.
refused_at_start mb-native-misaligned \
    "$(xml_for examples/libvirt/native/pc-i440fx-10.2-misaligned.xml qemu mb-native-misaligned)" \
    "merge-barriers: merge barrier 0x100800 is not a multiple of 0x10000 (64 KiB: the largest host page a guest can migrate to)" "QEMU's"

if $have_unpatched; then
    xml=$(xml_for examples/libvirt/native/pc-q35-10.1-latest.xml qemu mb-native-unpatched)
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
    mkdir -p "$EMUDIR/downgraded"
    install -m 755 "$EMULATOR" "$EMUDIR/downgraded/qemu-system-x86_64"
    xml=$(xml_for examples/libvirt/native/pc-q35-10.1-latest.xml qemu mb-native-downgraded)
    # a machine type both QEMUs have
    sed -i -e "s|<emulator>.*</emulator>|<emulator>$EMUDIR/downgraded/qemu-system-x86_64</emulator>|" \
        -e "s|machine='pc-q35-10.1'|machine='pc-q35-10.0'|" "$xml"
    downgrade() { install -m 755 "$UNPATCHED_QEMU" "$EMUDIR/downgraded/qemu-system-x86_64"; }
    before_start=downgrade refused_at_start mb-native-downgraded "$xml" \
        "merge barriers are not supported by this QEMU binary" "libvirt's"
else
    ok "# SKIP start with a downgraded QEMU: $UNPATCHED_QEMU missing or has merge-barriers"
fi

# A real peer: libvfio-user's gpio-pci-idio-16 sample server as a vfio-user
# device of a pc-q35-10.1 domain (no barriers by default) while the firmware
# boots.  SeaBIOS (to "No bootable device", on the debug console), without
# the element and with an explicit barrier at 1 MiB; OVMF with Secure Boot
# (SMM on; to the shell or "No bootable option", on the serial console),
# without the element and with layout='latest' for two <memory> sizes: QEMU
# puts the TSEG barrier at a different address for each, and the XML holds
# none.  libvirt has no vfio-user device, so the device and the debug
# console come through <qemu:commandline> (that taints the domain; the
# barriers do not come that way).  Checked: the barriers QEMU has (given
# here, not derived from QEMU: the TSEG base for 2 GiB and 1.5 GiB with
# pc-q35-10.1's 16 MiB TSEG); counted like scripts/dma_churn.py, the
# server's removals of DMA regions over RAM above 1 MiB outside TSEG (TSEG
# itself is unmapped while SMM code runs, by design); and that the device
# still works: the server mapped every region QEMU offered and holds guest
# RAM after the boot.  SeaBIOS under TCG and
# KVM where usable; Secure Boot under TCG only (this host's KVM has no SMM).
SERVER=$TOP/out/libvfio-user-build/samples/gpio-pci-idio-16
OVMF=/usr/share/OVMF
SECBOOT_END="No bootable option or device was found."
scripts/build-vfio-user.sh >&2 || echo "# build-vfio-user.sh failed"
vfu_domain() {  # NAME DIR FEATURES TYPE MIB FIRMWARE: pc-q35-10.1, shared memfd RAM
    local os="" features=$3 console=""
    if [ "$6" = secboot ]; then
        cp "$OVMF/OVMF_VARS_4M.ms.fd" "$2/VARS.fd"; chmod 666 "$2/VARS.fd"
        os="<loader readonly='yes' secure='yes' type='pflash' format='raw'>$OVMF/OVMF_CODE_4M.secboot.fd</loader>
    <nvram format='raw'>$2/VARS.fd</nvram>"
        features="<acpi/><smm state='on'/>$features"
        console="<serial type='file'><source path='$2/serial.log'/></serial>"
    fi
    cat <<EOX
<domain type='$4' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$1</name>
  <memory unit='MiB'>$5</memory>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-10.1'>hvm</type>
    $os
  </os>
  <features>$features</features>
  <devices><emulator>$EMULATOR</emulator>$console</devices>
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
vfu_server() {  # SERVER_LOG [TSEG_START TSEG_END]: "REMOVALS MAP_FAILURES LIVE":
                # removals of DMA regions over RAM above 1 MiB outside TSEG, the
                # regions the server could not map, the regions mapped at the end
    python3 -c 'import sys; sys.path.insert(0, "scripts"); from mblib import parsers
text = open(sys.argv[1], errors="replace").read()
tseg = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else None
print(parsers.parse_server_log(text, tseg)[0],
      text.count("failed to memory map DMA region"),
      parsers.live_dma_regions(text))' "$@"
}
booted() {  # FIRMWARE DIR: the end of boot is on the console
    if [ "$1" = secboot ]; then
        grep -qsF -e "Shell> " -e "$SECBOOT_END" "$2/serial.log"
    else
        grep -qs "No bootable device" "$2/debugcon.log"
    fi
}
if [ -x "$SERVER" ]; then
    while read -r label firmware mib want barriers features; do
      for accel in "${accels[@]}"; do
        if [ "$firmware" = secboot ] && [ "$accel" = kvm ]; then
            ok "# SKIP vfio-user, $label (kvm): Secure Boot needs SMM, which this host's KVM lacks"
            continue
        fi
        if [ "$firmware" = secboot ] && [ ! -e "$OVMF/OVMF_CODE_4M.secboot.fd" ]; then
            not_ok "vfio-user, $label: no $OVMF/OVMF_CODE_4M.secboot.fd (Debian's ovmf)"; continue
        fi
        name=mb-native-vfio-user-$label-$accel
        domains+=("$name")
        dir=$EMUDIR/$label-$accel
        rm -rf "$dir"; mkdir -p "$dir"; chmod 777 "$dir"
        "$SERVER" -v "$dir/vfio-user.sock" >"$dir/server.log" 2>&1 &
        srv=$!
        for _ in $(seq 200); do [ -S "$dir/vfio-user.sock" ] && break; sleep 0.05; done
        chmod 666 "$dir/vfio-user.sock" 2>/dev/null
        vfu_domain "$name" "$dir" "$features" "$accel" "$mib" "$firmware" >"$RUN/$name.xml"
        out=""
        if "${VIRSH[@]}" define "$RUN/$name.xml" >/dev/null &&
           out=$("${VIRSH[@]}" start "$name" 2>&1); then
            esc=false
            for _ in $(seq 1200); do
                booted "$firmware" "$dir" && break
                if ! $esc && grep -qs "startup.nsh" "$dir/serial.log"; then
                    "${VIRSH[@]}" send-key "$name" KEY_ESC >/dev/null 2>&1; esc=true
                fi
                sleep 0.1
            done
            check "vfio-user, $label ($accel): $firmware reached the end of boot" \
                booted "$firmware" "$dir"
            got=$(lv_as_barriers "$name")
            check "vfio-user, $label ($accel): barriers in force after the boot (info mtree -f) = $barriers (got $got)" \
                test "$got" = "$barriers"
            tseg=()
            if [ "$firmware" = secboot ]; then
                below=$(lv_qom_get "$name" /machine/q35 below-4g-mem-size)
                mb=$(lv_qom_get "$name" /machine/q35/mch extended-tseg-mbytes)
                tseg=($((below - mb * 1048576)) "$below")
                echo "# $label: below-4g $below, TSEG [${tseg[0]}, $below)"
            fi
            "${VIRSH[@]}" destroy "$name" >/dev/null 2>&1
            read -r got failures live < <(vfu_server "$dir/server.log" "${tseg[@]}")
            # the device still does its job: every region QEMU offered was
            # mapped, and guest RAM is mapped after the boot
            check "vfio-user, $label ($accel): the server mapped every DMA region (failures: $failures) and holds $live after the boot" \
                test "$failures" = 0 -a "$live" -gt 0
            if [ "$want" != ">0" ]; then
                check "vfio-user, $label ($accel): $want DMA unmaps of RAM above 1 MiB outside TSEG (got $got)" test "$got" = "$want"
            else
                check "vfio-user, $label ($accel): DMA unmaps of RAM above 1 MiB outside TSEG > 0 (got $got)" test "$got" -gt 0
            fi
        else
            not_ok "vfio-user, $label ($accel): define/start: ${out:-define failed}"
        fi
        "${VIRSH[@]}" undefine --nvram "$name" >/dev/null 2>&1
        kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null
      done
    done <<'EOF_VFU'
seabios-no-element seabios 2048 >0 []
seabios-barrier-1M seabios 2048 0 [1048576] <merge-barriers><barrier address='0x100000'/></merge-barriers>
secboot-no-element secboot 2048 >0 []
secboot-latest-2G secboot 2048 1 [1048576,2130706432] <merge-barriers layout='latest'/>
secboot-latest-1536M secboot 1536 1 [1048576,1593835520] <merge-barriers layout='latest'/>
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
