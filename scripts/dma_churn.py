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
import shutil
import subprocess
import sys
import tempfile
import time

from mblib.guestram import (GUEST_RAM, GuestRam, HostLimit, by_guest_ram,
                            page_label)
from mblib.machine import (FAMILY, OVMF_DIR, add_churn_args, connect_qmp,
                           firmware_args, kvm_usable, machine_opts,
                           reference_rows, tseg_window, wait_boot)
from mblib.parsers import (human, listener_address_spaces, live_dma_regions,
                           parse_flatviews, parse_memslots, parse_server_log,
                           parse_topology, per_as)
from mblib.peers import VFIO_USER_SERVER, start_vfio_user_server
from mblib.qmp import stop
from mblib.report import (grouped_bars_svg, log, text_table, write_csv,
                          write_markdown)

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
# Guest RAM backends (mblib.guestram.GUEST_RAM) -> the setups that run on them:
# every setup on 4 KiB pages; the firmware and machines without a vIOMMU on
# 2 MiB hugepages; SeaBIOS q35 and Secure Boot on 1 GiB hugepages.
MEMORY = {
    "memfd": list(SETUPS),
    "memfd-2M": ["pc", "q35", "q35-ovmf", "q35-ovmf-secboot"],
    "memfd-1G": ["q35", "q35-ovmf-secboot"],
}


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
    ap.add_argument("--server", default=VFIO_USER_SERVER)
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
