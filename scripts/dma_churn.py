#!/usr/bin/env python3
"""Count the DMA unmaps of guest RAM above 1 MiB while firmware boots.

A real vfio-user peer (libvfio-user's gpio-pci-idio-16 sample server, run
with -v) logs every DMA region QEMU adds or removes.  QEMU boots firmware
with no disk, from machine start until the end of boot, then quits:

  SeaBIOS        pc and q35; end: its boot-failure message on the debug
                 console (isa-debugcon at 0x402).  On q35 also with the
                 device behind an emulated IOMMU (intel-iommu with
                 caching-mode=on, amd-iommu with dma-remap=on; DMA
                 remapping stays off, so the device's address space is the
                 IOMMU's pass-through view of system memory)
  OVMF           pc and q35 (OVMF_CODE_4M.fd, a private copy of
                 OVMF_VARS_4M.fd); end: the UEFI shell prompt on the
                 serial console (ESC skips startup.nsh's 5 s countdown)
  OVMF secboot   q35 with SMM (OVMF_CODE_4M.secboot.fd and a copy of
                 OVMF_VARS_4M.ms.fd: Secure Boot on, Microsoft keys
                 enrolled; secure pflash).  The unsigned built-in shell is
                 refused ("Security Violation"): end of boot is BdsDxe's
                 "No bootable option or device was found."

For each run we count:

  removals   "removing DMA region" entries of the vfio-user server that take
             away guest RAM above 1 MiB outside the TSEG window, and the
             bytes of that RAM they unmap
  TSEG       removals that take away RAM only inside the TSEG window
             [below_4g - extended-tseg-mbytes MiB, below_4g) (q35; OVMF
             with SMM opens and closes TSEG there).  A removal overlapping
             both counts under removals: it took away RAM outside TSEG
  trace      address_space_topology_del trace events (patched QEMU only:
             the event is new) that remove RAM outside TSEG from the view
             the device uses (AS "memory", or behind an IOMMU the device's
             own address space: "vtd-root" with root vtd-SS.F,
             "amd_iommu_devfn_N"), from the device's first DMA mapping on.
             Address spaces with the same name sharing the device's view
             (every vtd-root) report each change once each: counted once
             per memory transaction
  memslot    KVM memory slots over RAM above 1 MiB outside TSEG that were
             deleted (kvm_set_user_memory with size 0), per KVM address
             space ("0:4 1:4": AddrSpace#0 memory, #1 SMM), with KVM only

Usage: dma_churn.py [--unpatched BIN] [--csv F] [--svg F] [--markdown F]
                    [--tap] [--accel tcg|kvm] [--setup NAME ...]
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from mbtools import (GUEST_RAM, QMP, RAM_SIZE, page_label, GuestRam, HostLimit,
                     start_vfio_user_server,
                     add_churn_args, by_guest_ram, reference_rows,
                     grouped_bars_svg, stop, text_table,
                     write_csv, write_markdown)

MiB = 1 << 20
RAM_ABOVE_1M = (MiB, RAM_SIZE)
RAM_REGION = "mem"          # the memory backend's id: the RAM's region name
BOOT_TIMEOUT = 300
OVMF_DIR = "/usr/share/OVMF"

SEABIOS_END = b"No bootable device."
SHELL_PROMPT = b"Shell> "
SECBOOT_END = b"No bootable option or device was found."

# Test setups: name -> (machine kind, firmware, IOMMU device or None,
# whether the 10.1 machine type churns, whether "merge-barriers=" rows run).
# pc with OVMF does not churn even without barriers (OVMF never merges the
# RAM below and above 1 MiB there); secure-boot OVMF needs q35 (SMM), on pc
# it hangs without output.
SETUPS = {
    "pc": ("pc", "SeaBIOS", None, True, True),
    "q35": ("q35", "SeaBIOS", None, True, True),
    "q35-intel-iommu": ("q35", "SeaBIOS", "intel-iommu", True, False),
    "q35-amd-iommu": ("q35", "SeaBIOS", "amd-iommu", True, False),
    "pc-ovmf": ("pc", "OVMF", None, False, False),
    "q35-ovmf": ("q35", "OVMF", None, True, False),
    "q35-ovmf-secboot": ("q35", "OVMF secboot", None, True, False),
}
IOMMU_DEVICE = {
    # VFIO-type devices need caching mode to see the guest's mappings.
    "intel-iommu": "intel-iommu,caching-mode=on",
    # Without dma-remap the device is accepted while remapping is off, but
    # refused ("requires dma-remap=1") as soon as the guest turns it on.
    "amd-iommu": "amd-iommu,dma-remap=on",
}
FAMILY = {"pc": "pc-i440fx", "q35": "pc-q35"}
# Guest RAM backends (mbtools.GUEST_RAM) -> the setups that run on them:
# every setup on 4 KiB pages; the firmware and machines without a vIOMMU on
# 2 MiB hugepages; SeaBIOS q35 and Secure Boot on 1 GiB hugepages.
MEMORY = {
    "memfd": list(SETUPS),
    "memfd-2M": ["pc", "q35", "q35-ovmf", "q35-ovmf-secboot"],
    "memfd-1G": ["q35", "q35-ovmf-secboot"],
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def kvm_usable():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def overlap(start, end, lo=RAM_ABOVE_1M[0], hi=RAM_ABOVE_1M[1]):
    return max(0, min(end, hi) - max(start, lo))


def outside_tseg(start, end, tseg=None):
    """Bytes of RAM above 1 MiB outside the TSEG window in [start, end)."""
    if not tseg:
        return overlap(start, end)
    return overlap(start, end, MiB, tseg[0]) + \
        overlap(start, end, tseg[1], RAM_SIZE)


def classify(start, end, tseg=None):
    """'outside' (with the bytes outside TSEG), 'tseg' or None."""
    nbytes = outside_tseg(start, end, tseg)
    if nbytes:
        return "outside", nbytes
    if tseg and overlap(start, end, *tseg):
        return "tseg", overlap(start, end, *tseg)
    return None, 0


def parse_server_log(text, tseg=None):
    """vfio-user server: removals of DMA regions over RAM above 1 MiB.

    Returns (removals outside TSEG, bytes outside TSEG they unmap, removals
    inside TSEG only).  The server's teardown ("removing DMA region
    iova=[...") is not a removal by QEMU and does not match."""
    removals, nbytes, in_tseg = 0, 0, 0
    for m in re.finditer(r"removing DMA region \[(0x[0-9a-f]+|0), "
                         r"(0x[0-9a-f]+)\)", text):
        where, size = classify(int(m.group(1), 16), int(m.group(2), 16),
                               tseg)
        if where == "outside":
            removals += 1
            nbytes += size
        elif where == "tseg":
            in_tseg += 1
    return removals, nbytes, in_tseg


def live_dma_regions(text):
    """vfio-user server: the DMA regions QEMU has mapped at the end (after
    the boot), each [start, end) added and not removed since."""
    live = set()
    for m in re.finditer(r"(adding|removing) DMA region \[(0x[0-9a-f]+|0), "
                         r"(0x[0-9a-f]+)\)", text):
        region = (int(m.group(2), 16), int(m.group(3), 16))
        if m.group(1) == "adding":
            live.add(region)
        else:
            live.discard(region)
    return len(live)


TOPO_RE = re.compile(r"address_space_topology_del as (.+?): 0x([0-9a-f]+) "
                     r"size 0x([0-9a-f]+) region (.*)$")


def parse_topology(text, as_name="memory", tseg=None, ram=RAM_REGION):
    """address_space_topology_del events of AS as_name that remove RAM
    outside TSEG, from the device's first DMA mapping on.

    flatview_new lines start each memory transaction (all views are
    rendered first, then each address space updated).  Within one
    transaction, every address space named as_name that shares the view
    reports the same removal: it counts once."""
    trace, txn, seen = 0, 0, set()
    listening = text.find("vfio_listener_region_add_ram")
    for line in text[max(listening, 0):].splitlines():
        if line.startswith("flatview_new"):
            txn += 1
            continue
        m = TOPO_RE.match(line)
        if not m or m.group(1) != as_name or m.group(4) != ram:
            continue
        start, size = int(m.group(2), 16), int(m.group(3), 16)
        key = (txn, start, size)
        if key not in seen and outside_tseg(start, start + size, tseg):
            seen.add(key)
            trace += 1
    return trace


def listener_address_spaces(text):
    """The address spaces whose topology changes the device's DMA listener
    followed: for each vfio_listener_region_del, the AS of the
    address_space_topology_del just before it (same section)."""
    names, last = {}, None
    for line in text.splitlines():
        m = TOPO_RE.match(line)
        if m:
            last = m.group(1)
        elif line.startswith("flatview_new"):
            last = None
        elif line.startswith("vfio_listener_region_del") and last:
            names[last] = names.get(last, 0) + 1
    return names


KVM_RE = re.compile(r"kvm_set_user_memory AddrSpace#(\d+) Slot#(\d+) "
                    r"flags=0x[0-9a-f]+ gpa=0x([0-9a-f]+) size=0x([0-9a-f]+)")


def parse_memslots(text, tseg=None):
    """KVM memory slots: per KVM address space (0 memory, 1 SMM), how many
    slots over RAM above 1 MiB outside TSEG were deleted, and how many
    slots exist at the end.  Returns ({as: deleted}, {as: live})."""
    slots, deleted = {}, {}
    for m in KVM_RE.finditer(text):
        asid, key = int(m.group(1)), (int(m.group(1)), int(m.group(2)))
        gpa, size = int(m.group(3), 16), int(m.group(4), 16)
        deleted.setdefault(asid, 0)
        if size == 0:
            old = slots.pop(key, None)
            if old and outside_tseg(old[0], old[0] + old[1], tseg):
                deleted[asid] += 1
        else:
            slots[key] = (gpa, size)
    live = {a: sum(1 for (s, _) in slots if s == a) for a in deleted}
    return deleted, live


def per_as(counts):
    """{0: 4, 1: 4} -> "0:4 1:4"."""
    return " ".join(f"{a}:{counts[a]}" for a in sorted(counts))


def parse_flatviews(text):
    """info mtree -f: [(set of (AS name, root), {AS name: barriers})]."""
    views = []
    for line in text.splitlines():
        if line.startswith("FlatView #"):
            views.append((set(), {}))
            continue
        m = re.match(r' AS "(.*)", root: (.*?)(?:, merge barriers: (.*))?$',
                     line)
        if m and views:
            views[-1][0].add((m.group(1), m.group(2)))
            if m.group(3):
                views[-1][1][m.group(1)] = m.group(3)
    return views


def device_as(qmp, iommu):
    """The address space the vfio-user device does DMA in, from its PCI
    address and info mtree -f: (name, note, its barriers, whether no
    same-named address space lives in another view)."""
    dev = None
    for bus in qmp.cmd("query-pci"):
        for d in bus["devices"]:
            if d.get("qdev_id") == "vfio0":
                dev = d
    if dev is None:
        raise RuntimeError("vfio-user device not in query-pci")
    slot, func = dev["slot"], dev["function"]
    if iommu == "intel-iommu":
        name, root = "vtd-root", f"vtd-{slot:02x}.{func:x}"
    elif iommu == "amd-iommu":
        name, root = f"amd_iommu_devfn_{slot * 8 + func}", None
    else:
        name, root = "memory", "system"
    views = parse_flatviews(qmp.cmd("human-monitor-command",
                                    **{"command-line": "info mtree -f"}))
    mine = [v for v in views
            if any(n == name and (root is None or r == root)
                   for n, r in v[0])]
    if len(mine) != 1:
        raise RuntimeError(f"device {slot:02x}.{func:x}: address space "
                           f"{name} (root {root}) not in info mtree -f")
    view, barriers = mine[0]
    # Same-named address spaces outside the device's view would make the
    # per-transaction count of their trace events ambiguous.
    others = [v for v in views if v is not mine[0] and
              any(n == name for n, _ in v[0])]
    note = f"{name}" + (f" (root {root})" if root and name != "memory"
                        else "")
    shared = sum(1 for n, _ in view if n == name)
    if shared > 1:
        note += f", {shared} same-named ASes share the view"
    if others:
        note += ", WARNING: same-named ASes in other views"
    return name, note, barriers.get(name, ""), not others


def tseg_window(qmp, kind):
    """q35: [below_4g - extended-tseg-mbytes MiB, below_4g); pc: None."""
    if kind != "q35":
        return None
    mbytes = qmp.cmd("qom-get", path="/machine/q35/mch",
                     property="extended-tseg-mbytes")
    below = qmp.cmd("qom-get", path="/machine/q35",
                    property="below-4g-mem-size")
    return (below - mbytes * MiB, below) if mbytes else None


def firmware_args(firmware, workdir, ovmf_dir):
    """(QEMU arguments, file to watch, end-of-boot markers)."""
    if firmware == "SeaBIOS":
        dbg = os.path.join(workdir, "debugcon.log")
        return (["-serial", "none",
                 "-chardev", f"file,id=dbg,path={dbg}",
                 "-device", "isa-debugcon,iobase=0x402,chardev=dbg"],
                dbg, [SEABIOS_END])
    secboot = firmware == "OVMF secboot"
    code = os.path.join(ovmf_dir, "OVMF_CODE_4M.secboot.fd" if secboot
                        else "OVMF_CODE_4M.fd")
    tmpl = os.path.join(ovmf_dir, "OVMF_VARS_4M.ms.fd" if secboot
                        else "OVMF_VARS_4M.fd")
    for f in (code, tmpl):
        if not os.path.exists(f):
            raise RuntimeError(f"no {f}: install Debian's ovmf "
                               "(scripts/deps.sh e2e)")
    nvram = os.path.join(workdir, "OVMF_VARS.fd")
    shutil.copyfile(tmpl, nvram)
    serial = os.path.join(workdir, "serial.log")
    args = ["-chardev", f"file,id=ser,path={serial}",
            "-serial", "chardev:ser",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={nvram}"]
    if secboot:
        args += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return args, serial, ([SHELL_PROMPT, SECBOOT_END] if secboot
                          else [SHELL_PROMPT])


def machine_opts(cfg, ram):
    mopts = cfg["machine_type"] + ram.machine_option()
    if cfg["firmware"] == "OVMF secboot":
        mopts += ",smm=on"
    if cfg["barriers"] is not None:
        mopts += f",merge-barriers={cfg['barriers']}"
    return mopts


def qemu_failed(err):
    """Raise what QEMU said when it exited at startup: HostLimit when the
    accelerator lacks what the machine needs (SMM under this host's KVM)."""
    msg = open(err, errors="replace").read().strip()
    if "not supported by this hypervisor" in msg:
        raise HostLimit(msg.splitlines()[-1])
    raise RuntimeError("QEMU did not start: " + msg)


def connect_qmp(qemu_proc, path, err, timeout=30):
    """QMP once QEMU listens.  QEMU creates and even accepts on the socket
    before it may still fail (accelerator setup): a QEMU that exits instead
    of answering raises its own message."""
    deadline = time.time() + timeout
    while True:
        if qemu_proc.poll() is not None:
            qemu_failed(err)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
                break
            except OSError:
                pass
        if time.time() > deadline:
            raise RuntimeError(f"QMP not listening after {timeout} s")
        time.sleep(0.02)
    try:
        return QMP(path)
    except (OSError, EOFError):
        try:
            qemu_proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise
        qemu_failed(err)


def wait_boot(qemu_proc, qmp, watch, ends, err, check=None):
    """Wait for an end-of-boot marker in `watch`; returns the seconds
    since QEMU started.  Presses ESC at the UEFI shell's startup.nsh
    countdown.  A guest stopped on an internal error (a KVM that cannot
    run this firmware) ends the wait at once; so does check() raising
    (a device's peer that failed)."""
    start = time.time()
    esc_sent = False
    while True:
        out = open(watch, "rb").read() if os.path.exists(watch) else b""
        if any(e in out for e in ends):
            return time.time() - start
        if not esc_sent and b"startup.nsh" in out:
            qmp.cmd("send-key", keys=[{"type": "qcode", "data": "esc"}])
            esc_sent = True
        if check:
            check()
        if qemu_proc.poll() is not None:
            raise RuntimeError("QEMU exited before the end of boot: " +
                               open(err).read().strip())
        if qmp.cmd("query-status")["status"] == "internal-error":
            msg = [m for m in open(err, errors="replace").read()
                   .splitlines() if "internal error" in m or
                   m == "emulation failure"]
            raise HostLimit("the guest stopped on an internal error (" +
                            ", ".join(msg or ["see query-status"]) +
                            "): this host's accelerator cannot run it")
        if time.time() - start > BOOT_TIMEOUT:
            raise RuntimeError("no end of boot after %d s" % BOOT_TIMEOUT)
        time.sleep(0.05)


def run_one(qemu, server, cfg, accel, workdir, ovmf_dir=OVMF_DIR):
    """Boot the firmware to its end with a vfio-user device; count churn.
    Also counts the DMA regions the server could not mmap() (a region
    whose fd offset the fd's page size refuses)."""
    sock = os.path.join(workdir, "vfio-user.sock")
    qmp_path = os.path.join(workdir, "qmp.sock")
    trace = os.path.join(workdir, "trace.log")
    srv_log = os.path.join(workdir, "server.log")
    err = os.path.join(workdir, "qemu.err")
    for f in (sock, qmp_path, trace):
        if os.path.exists(f):
            os.unlink(f)
    fw_args, watch, ends = firmware_args(cfg["firmware"], workdir, ovmf_dir)

    srv = start_vfio_user_server(server, sock, srv_log)
    qemu_proc = None
    try:

        ram = GuestRam(cfg["memory"])
        args = [qemu, "-machine", machine_opts(cfg, ram), "-accel", accel,
                "-m", "2G"] + ram.args() + \
            ["-display", "none", "-nodefaults"] + fw_args
        if cfg["iommu"]:
            # before the device, which must sit behind it (on pcie.0)
            args += ["-device", IOMMU_DEVICE[cfg["iommu"]]]
        args += ["-device", json.dumps({"driver": "vfio-user-pci",
                                        "id": "vfio0",
                                        "socket": {"path": sock,
                                                   "type": "unix"}}),
                 "-qmp", f"unix:{qmp_path},server=on,wait=off",
                 "-D", trace]
        # vfio_listener_region_add_ram marks when the device's DMA listener
        # starts: the topology trace is counted from there on, the window
        # the device sees.  flatview_new starts each memory transaction;
        # vfio_listener_region_del shows which address space the listener
        # follows.
        events = ["vfio_listener_region_add_ram", "vfio_listener_region_del",
                  "flatview_new"]
        patched = "merge-barriers" in subprocess.run(
            [qemu, "-machine", f"{cfg['machine_type']},help"],
            capture_output=True, text=True).stdout
        if patched:
            events.append("address_space_topology_del")
        if accel == "kvm":
            events.append("kvm_set_user_memory")
        for e in events:
            args += ["-trace", f"enable={e}"]
        with open(err, "wb") as errf:
            qemu_proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                         stderr=errf)
        qmp = connect_qmp(qemu_proc, qmp_path, err)
        boot = wait_boot(qemu_proc, qmp, watch, ends, err)
        tseg = tseg_window(qmp, cfg["machine"])
        as_name, as_note, barriers, as_exact = device_as(qmp, cfg["iommu"])
        qmp.cmd("quit")
        qmp.close()
        qemu_proc.wait(timeout=30)
    finally:
        stop(qemu_proc, 5)
        stop(srv, 10)

    srv_text = open(srv_log, errors="replace").read()
    removals, nbytes, in_tseg = parse_server_log(srv_text, tseg)
    ttext = open(trace, errors="replace").read() if os.path.exists(trace) else ""
    slots, live = parse_memslots(ttext, tseg)
    followed = listener_address_spaces(ttext)
    return {
        "removals": removals, "bytes": nbytes,
        "tseg": in_tseg if tseg else None,
        "tseg_window": tseg,
        "trace": parse_topology(ttext, as_name, tseg) if patched else None,
        "trace_exact": as_exact,
        "device_as": as_name, "device_as_note": as_note,
        "device_as_barriers": barriers,
        # None: not checkable (unpatched QEMU has no topology trace)
        "listener_as": followed if patched else None,
        "memslot": slots if accel == "kvm" else None,
        "memslots_steady": live if accel == "kvm" else None,
        "dma_maps": live_dma_regions(srv_text),
        "map_failures": srv_text.count("failed to memory map DMA region"),
        "boot_s": round(boot, 2),
    }


def configs(patched, unpatched, setups, memories=("memfd",),
            alternative=None):
    """One dict per row: setup, machine, firmware, iommu, guest RAM
    backend, label, binary, machine type, barriers, expect ("zero",
    "one", "churn" or "any").  A vfio-user peer maps every section QEMU sends, so
    the expectations do not depend on the backend's page size."""
    out = []
    for memory, name in [(m, n) for m in memories for n in setups
                         if n in MEMORY[m]]:
        kind, firmware, iommu, churns, off_row = SETUPS[name]
        fam = FAMILY[kind]
        rows = []
        rows += [(label, binary, mtype, None, "any") for label, binary, mtype
                 in reference_rows(unpatched, alternative, f"{fam}-10.2")]
        # OVMF with SMM: the MCH arms the TSEG barrier at the first TSEG
        # enable, which still moves the end of the RAM above 1 MiB once.
        rows.append(("patched, 10.2 type (default)", patched, f"{fam}-10.2",
                     None, "one" if firmware == "OVMF secboot" else "zero"))
        if off_row:
            rows.append(("patched, merge-barriers= (off)", patched,
                         f"{fam}-10.2", "", "churn"))
        if kind == "q35" and not iommu and firmware != "OVMF":
            # SeaBIOS: the cost of the default TSEG barrier where TSEG stays
            # unused (the mappings after boot, against the 1 MiB barrier
            # alone).  Secure Boot: what the 1 MiB barrier alone leaves.
            rows.append(("patched, merge-barriers=1M (no TSEG barrier)",
                         patched, f"{fam}-10.2", "1M",
                         "zero" if firmware == "SeaBIOS" else "churn"))
        rows.append(("patched, 10.1 type", patched, f"{fam}-10.1", None,
                     "churn" if churns else "any"))
        if churns:
            # an old type opting in by intent: the newest types' barriers
            rows.append(("patched, 10.1 type, merge-layout=latest", patched,
                         f"{fam}-10.1,merge-layout=latest", None,
                         "one" if firmware == "OVMF secboot" else "zero"))
        for label, binary, mtype, barriers, expect in rows:
            out.append({"setup": name, "machine": kind, "firmware": firmware,
                        "iommu": iommu, "memory": memory,
                        "configuration": label,
                        "binary": binary, "machine_type": mtype,
                        "barriers": barriers, "expect": expect})
    return out


def human(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def group_of(r):
    """Chart group: machine (+IOMMU), firmware, accelerator, page size."""
    return (r["machine"] + (f" + {r['iommu']}" if r["iommu"] else ""),
            f"{r['firmware']} / {r['accel']}",
            page_label(GUEST_RAM[r["memory"]][1]) + " pages")


def write_svg(rows, path):
    """A grouped bar chart: removals per setup and configuration."""
    labels = list(dict.fromkeys(r["configuration"] for r in rows))
    groups = list(dict.fromkeys(group_of(r) for r in rows))

    def value(g, label):
        return next((r["removals"] for r in rows if group_of(r) == g and
                     r["configuration"] == label), None)

    grouped_bars_svg(path, "DMA unmaps of guest RAM above 1 MiB (outside "
                     "TSEG) while firmware boots (vfio-user)", groups,
                     labels, value)


def tap_check(cfg, r):
    """(ok, text) for one row."""
    problems = []
    n = r["removals"]
    if cfg["expect"] == "zero" and n:
        problems.append(f"{n} removals outside TSEG, expected 0")
    if cfg["expect"] == "one" and n != 1:
        problems.append(f"{n} removals outside TSEG, expected 1 (the first "
                        "TSEG enable)")
    if cfg["expect"] == "churn" and not n:
        problems.append("0 removals, expected > 0")
    # The device could map all the guest memory QEMU gave it.
    if r["map_failures"]:
        problems.append(f"the server could not mmap() {r['map_failures']} "
                        "DMA regions")
    # The cross-checks must agree with the device's view.
    if r["trace"] is not None and r["trace"] != n:
        problems.append(f"trace {r['trace']} != removals {n}")
    if r["trace"] is not None and not r["trace_exact"]:
        problems.append("trace count ambiguous: " + r["device_as_note"])
    if r["listener_as"] is not None and \
            set(r["listener_as"]) - {r["device_as"]}:
        problems.append("the device's DMA listener followed "
                        f"{sorted(r['listener_as'])}, not {r['device_as']}")
    if r["listener_as"] is not None and cfg["iommu"] and \
            not r["listener_as"]:
        problems.append("no DMA listener update seen in "
                        f"{r['device_as']}: is the device behind the IOMMU?")
    if r["memslot"] is not None and cfg["expect"] == "zero" and \
            any(r["memslot"].values()):
        problems.append(f"memslot removals {per_as(r['memslot'])}")
    expected = {"zero": "0", "one": "1", "churn": "> 0",
                "any": "any"}[cfg["expect"]]
    text = (f"{n} removals, TSEG {'-' if r['tseg'] is None else r['tseg']}"
            f" (trace {r['trace']}, memslot "
            f"{'-' if r['memslot'] is None else per_as(r['memslot'])}; "
            f"device AS {r['device_as']}), expected {expected}")
    if problems:
        text += ": " + "; ".join(problems)
    return not problems, text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default="out/qemu-system-x86_64")
    ap.add_argument("--server",
                    default="out/libvfio-user-build/samples/gpio-pci-idio-16")
    ap.add_argument("--accel", action="append", choices=["tcg", "kvm"])
    add_churn_args(ap, SETUPS, OVMF_DIR,
                   "emit TAP: 0 removals with the default machine types, "
                   "more than 0 without barriers")
    opts = ap.parse_args()

    accels = opts.accel or ["tcg", "kvm"]
    notes = []
    if "kvm" in accels and not kvm_usable():
        accels.remove("kvm")
        notes.append("KVM skipped: /dev/kvm is not usable on this machine")
    for n in notes:
        log(n)

    rows = []
    memories = opts.memory or list(MEMORY)
    plan = [(a, c) for a in accels
            for c in configs(opts.qemu, opts.unpatched,
                             opts.setup or list(SETUPS), memories,
                             opts.alternative)]
    if opts.tap:
        print(f"1..{len(plan) + (1 if notes else 0)}", flush=True)
    skipped = []
    t0 = time.time()

    def describe(p):
        accel, cfg = p
        return (f"{cfg['machine_type']} {cfg['firmware']}"
                + (f" {cfg['iommu']}" if cfg["iommu"] else "")
                + f" {accel} {GUEST_RAM[cfg['memory']][0]}: "
                + cfg["configuration"])

    with tempfile.TemporaryDirectory(prefix="dma-churn-") as tmp:
        for i, (accel, cfg), what, workdir, _, skip in by_guest_ram(
                plan, lambda p: p[1]["memory"], tmp, describe):
            try:
                if skip:
                    raise HostLimit(skip)
                r = run_one(cfg["binary"], opts.server, cfg, accel, workdir,
                            opts.ovmf_dir)
            except HostLimit as e:
                log(f"    skipped: {e}")
                skipped.append(f"{what}: {e}")
                if opts.tap:
                    print(f"ok {i} {what} # SKIP {e}", flush=True)
                continue
            except Exception as e:            # report, keep going
                keep = os.path.join("out", "dma-churn-failed", str(i))
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(workdir, keep,
                                ignore=shutil.ignore_patterns("*.sock"))
                log(f"    failed: {e} (files: {keep})")
                if opts.tap:
                    print(f"not ok {i} {what}: {e}", flush=True)
                rows.append(None)
                continue
            r.update(accel=accel, **{k: cfg[k] for k in (
                "setup", "machine", "firmware", "iommu", "memory",
                "configuration", "machine_type")})
            rows.append(r)
            log(f"    {r['removals']} removals, {human(r['bytes'])} unmapped"
                f" outside TSEG, {r['tseg'] if r['tseg'] is not None else '-'}"
                f" in TSEG, {r['map_failures']} DMA regions the server "
                f"could not map, boot in {r['boot_s']} s; device AS "
                f"{r['device_as_note']}"
                + (f", barriers {r['device_as_barriers']}"
                   if r["device_as_barriers"] else "")
                + ("" if r["memslot"] is None
                   else f"; memslots deleted {per_as(r['memslot'])}"))
            if opts.tap:
                good, text = tap_check(cfg, r)
                print(f"{'ok' if good else 'not ok'} {i} {what}: {text}",
                      flush=True)
    if opts.tap and notes:
        print(f"ok {len(plan) + 1} # SKIP {notes[0]}")
    log(f"{len(plan)} runs in {time.time() - t0:.0f} s")
    if skipped:
        notes.append(f"skipped {len(skipped)} runs this host cannot do "
                     "(its KVM: OVMF stops on an internal error, no SMM "
                     "for secure boot)" if all(" kvm " in s for s in skipped)
                     else f"skipped {len(skipped)} runs this host cannot do"
                     " (see the log)")

    done = [r for r in rows if r]
    header = ["machine", "firmware", "iommu", "memory", "accel",
              "configuration", "removals", "bytes unmapped", "TSEG", "trace",
              "memslot", "DMA maps", "map failed", "slots", "boot s"]
    table = [[r["machine"], r["firmware"], r["iommu"] or "-",
              page_label(GUEST_RAM[r["memory"]][1]), r["accel"],
              r["configuration"], str(r["removals"]), human(r["bytes"]),
              "-" if r["tseg"] is None else str(r["tseg"]),
              "-" if r["trace"] is None else str(r["trace"]),
              "-" if r["memslot"] is None else per_as(r["memslot"]),
              str(r["dma_maps"]), str(r["map_failures"]),
              "-" if r["memslots_steady"] is None
              else per_as(r["memslots_steady"]),
              f"{r['boot_s']:.1f}"] for r in done]
    out = sys.stderr if opts.tap else sys.stdout
    print("", file=out)
    print(text_table(header, table), file=out)
    print("removals: vfio-user 'removing DMA region' entries that take away "
          "guest RAM above 1 MiB outside TSEG;\nTSEG: those inside "
          "[below_4g - extended-tseg-mbytes, below_4g) only (q35); trace: "
          "address_space_topology_del events\nfor it in the device's "
          "address space; memslot: KVM memory slots over it deleted, per "
          "KVM address space;\nDMA maps: DMA regions the device has mapped "
          "after the boot; map failed: DMA regions the server could not "
          "mmap();\nmemory: guest RAM page size (memfd); slots: KVM memory slots after the boot, per "
          "KVM address space", file=out)
    for n in notes:
        print(n, file=out)

    if opts.csv:
        write_csv(opts.csv,
                  ["machine", "machine_type", "firmware", "iommu", "memory",
                   "accel", "configuration", "removals", "bytes_unmapped",
                   "tseg_removals", "tseg_window", "trace_removals",
                   "device_as", "device_as_barriers", "memslot_removals",
                   "memslot_removals_per_as", "dma_maps_after_boot",
                   "memslots_after_boot_per_as", "dma_map_failures",
                   "post_seconds"],
                  [[r["machine"], r["machine_type"], r["firmware"],
                    r["iommu"], r["memory"], r["accel"], r["configuration"],
                    r["removals"], r["bytes"], r["tseg"],
                    "%#x-%#x" % r["tseg_window"] if r["tseg_window"]
                    else None,
                    r["trace"], r["device_as"], r["device_as_barriers"],
                    None if r["memslot"] is None
                    else sum(r["memslot"].values()),
                    None if r["memslot"] is None else per_as(r["memslot"]),
                    r["dma_maps"],
                    None if r["memslots_steady"] is None
                    else per_as(r["memslots_steady"]),
                    r["map_failures"], r["boot_s"]] for r in done])
    if opts.svg and done:
        write_svg(done, opts.svg)
    if opts.markdown:
        write_markdown(opts.markdown, header, table, notes)
    if opts.csv or opts.svg:
        print("written: " + ", ".join(p for p in (opts.csv, opts.svg,
                                                   opts.markdown) if p),
              file=out)
    return 0 if len(done) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
