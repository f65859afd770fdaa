#!/usr/bin/env python3
"""Count the DMA unmaps of guest RAM above 1 MiB during SeaBIOS POST.

A real vfio-user peer (libvfio-user's gpio-pci-idio-16 sample server, run
with -v) logs every DMA region QEMU adds or removes.  QEMU boots SeaBIOS
with no disk, from machine start until the firmware's boot-failure message
on its debug console (isa-debugcon at 0x402), then quits.  For each run we
count:

  removals   "removing DMA region" entries of the vfio-user server that take
             away guest RAM above 1 MiB, and the bytes they unmap
  trace      address_space_topology_del trace events of AS "memory" that
             remove RAM above 1 MiB, from the first DMA mapping of the device
             on (patched QEMU only: the event is new)
  memslot    KVM memory slots covering RAM above 1 MiB that were deleted
             (kvm_set_user_memory with size 0), with KVM only

Usage: dma_churn.py [--unpatched BIN] [--csv F] [--svg F] [--tap] [--accel ...]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from mbtools import QMP, stop, text_table, write_csv, write_markdown

MiB = 1 << 20
RAM_SIZE = 2 << 30          # all below 4 GiB on pc and q35
RAM_ABOVE_1M = (MiB, RAM_SIZE)
POST_END = b"No bootable device."
BOOT_TIMEOUT = 300


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


def parse_server_log(text):
    """vfio-user server: removals of DMA regions overlapping RAM above 1 MiB."""
    removals, nbytes = 0, 0
    for m in re.finditer(r"removing DMA region \[(0x[0-9a-f]+|0), "
                         r"(0x[0-9a-f]+)\)", text):
        size = overlap(int(m.group(1), 16), int(m.group(2), 16))
        if size:
            removals += 1
            nbytes += size
    return removals, nbytes


def parse_trace(text):
    """Topology trace and KVM memslot trace: removals of RAM above 1 MiB."""
    trace = 0
    listening = text.find("vfio_listener_region_add_ram")
    for m in re.finditer(r"address_space_topology_del as memory: "
                         r"0x([0-9a-f]+) size 0x([0-9a-f]+)",
                         text[max(listening, 0):]):
        start = int(m.group(1), 16)
        if overlap(start, start + int(m.group(2), 16)):
            trace += 1
    slots, memslot = {}, 0
    for m in re.finditer(r"kvm_set_user_memory AddrSpace#(\d+) Slot#(\d+) "
                         r"flags=0x[0-9a-f]+ gpa=0x([0-9a-f]+) "
                         r"size=0x([0-9a-f]+)", text):
        key = (m.group(1), m.group(2))
        gpa, size = int(m.group(3), 16), int(m.group(4), 16)
        if size == 0:
            old = slots.pop(key, None)
            if old and m.group(1) == "0" and overlap(old[0], old[0] + old[1]):
                memslot += 1
        else:
            slots[key] = (gpa, size)
    steady = sum(1 for (asid, _), (g, s) in slots.items() if asid == "0")
    return trace, memslot, steady


def run_one(qemu, server, machine, accel, barriers, workdir):
    """Boot SeaBIOS to the end of POST with a vfio-user device; count churn."""
    sock = os.path.join(workdir, "vfio-user.sock")
    qmp_path = os.path.join(workdir, "qmp.sock")
    dbg = os.path.join(workdir, "debugcon.log")
    trace = os.path.join(workdir, "trace.log")
    srv_log = os.path.join(workdir, "server.log")
    for f in (sock, qmp_path, dbg, trace):
        if os.path.exists(f):
            os.unlink(f)

    with open(srv_log, "wb") as out:
        srv = subprocess.Popen([server, "-v", sock], stdout=out,
                               stderr=subprocess.STDOUT)
    qemu_proc = None
    try:
        deadline = time.time() + 10
        while not os.path.exists(sock):
            if srv.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"vfio-user server did not start "
                                   f"(log: {srv_log})")
            time.sleep(0.02)

        mopts = f"{machine},memory-backend=mem"
        if barriers is not None:
            mopts += f",merge-barriers={barriers}"
        args = [qemu, "-machine", mopts, "-accel", accel, "-m", "2G",
                "-object", "memory-backend-memfd,id=mem,size=2G,share=on",
                "-display", "none", "-nodefaults", "-serial", "none",
                "-device", json.dumps({"driver": "vfio-user-pci",
                                       "socket": {"path": sock,
                                                  "type": "unix"}}),
                "-chardev", f"file,id=dbg,path={dbg}",
                "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
                "-qmp", f"unix:{qmp_path},server=on,wait=off",
                "-D", trace]
        # vfio_listener_region_add_ram marks when the device's DMA listener
        # starts: the topology trace is counted from there on, the window
        # the device sees.
        events = ["vfio_listener_region_add_ram"]
        if "merge-barriers" in subprocess.run(
                [qemu, "-machine", f"{machine},help"], capture_output=True,
                text=True).stdout:
            events.append("address_space_topology_del")
        if accel == "kvm":
            events.append("kvm_set_user_memory")
        for e in events:
            args += ["-trace", f"enable={e}"]
        start = time.time()
        qemu_proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(workdir,
                                                              "qemu.err"),
                                                 "wb"))
        qmp = QMP(qmp_path)
        while True:
            if os.path.exists(dbg) and POST_END in open(dbg, "rb").read():
                break
            if qemu_proc.poll() is not None:
                raise RuntimeError("QEMU exited before the end of POST: " +
                                   open(os.path.join(workdir, "qemu.err"))
                                   .read().strip())
            if time.time() - start > BOOT_TIMEOUT:
                raise RuntimeError("no end of POST after %d s" % BOOT_TIMEOUT)
            time.sleep(0.05)
        boot = time.time() - start
        qmp.cmd("quit")
        qmp.close()
        qemu_proc.wait(timeout=30)
    finally:
        stop(qemu_proc, 5)
        stop(srv, 10)

    removals, nbytes = parse_server_log(open(srv_log, errors="replace").read())
    ttext = open(trace, errors="replace").read() if os.path.exists(trace) else ""
    tr, memslot, steady = parse_trace(ttext)
    return {
        "removals": removals, "bytes": nbytes,
        "trace": tr if "address_space_topology_del" in events else None,
        "memslot": memslot if accel == "kvm" else None,
        "memslots_steady": steady if accel == "kvm" else None,
        "boot_s": round(boot, 2),
    }


def configs(patched, unpatched):
    """(label, binary, machine-type suffix, barriers) for pc and q35."""
    out = []
    for kind, fam in (("pc", "pc-i440fx"), ("q35", "pc-q35")):
        if unpatched:
            out.append((kind, "unpatched 10.2.2", unpatched, f"{fam}-10.2",
                        None))
        out += [
            (kind, "patched, 10.2 type (default)", patched, f"{fam}-10.2",
             None),
            (kind, "patched, merge-barriers= (off)", patched, f"{fam}-10.2",
             ""),
            (kind, "patched, 10.1 type", patched, f"{fam}-10.1", None),
        ]
    return out


def human(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def write_svg(rows, path):
    """A grouped bar chart: removals per configuration and accelerator."""
    w_bar, gap, top, left, height = 26, 14, 60, 60, 220
    labels = []
    for r in rows:
        if (r["configuration"]) not in labels:
            labels.append(r["configuration"])
    groups = []
    for r in rows:
        key = (r["machine"], r["accel"])
        if key not in groups:
            groups.append(key)
    vmax = max([r["removals"] for r in rows] + [4])
    colors = ["#888888", "#1f77b4", "#d62728", "#ff7f0e", "#2ca02c"]
    width = max(620, left + len(groups) * (len(labels) * w_bar + gap * 2) + 40)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{top + height + 90 + 18 * len(labels)}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="24" font-size="15" font-weight="bold">'
           'DMA unmaps of guest RAM above 1 MiB during SeaBIOS POST '
           '(vfio-user)</text>']
    for i in range(vmax + 1):
        y = top + height - i * height / vmax
        svg.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{width - 20}" '
                   f'y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 8}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{i}</text>')
    x = left + gap
    for (machine, accel) in groups:
        for j, label in enumerate(labels):
            r = next((r for r in rows if r["machine"] == machine and
                      r["accel"] == accel and r["configuration"] == label),
                     None)
            if r is None:
                continue
            h = r["removals"] * height / vmax
            svg.append(f'<rect x="{x + j * w_bar}" y="{top + height - h:.1f}"'
                       f' width="{w_bar - 4}" height="{max(h, 1):.1f}" '
                       f'fill="{colors[j % len(colors)]}"/>'
                       f'<text x="{x + j * w_bar + (w_bar - 4) / 2}" '
                       f'y="{top + height - h - 4:.1f}" '
                       f'text-anchor="middle">{r["removals"]}</text>')
        svg.append(f'<text x="{x + len(labels) * w_bar / 2}" '
                   f'y="{top + height + 18}" text-anchor="middle">'
                   f'{machine} / {accel}</text>')
        x += len(labels) * w_bar + gap * 2
    for j, label in enumerate(labels):
        y = top + height + 40 + 18 * j
        svg.append(f'<rect x="{left}" y="{y - 10}" width="12" height="12" '
                   f'fill="{colors[j % len(colors)]}"/>'
                   f'<text x="{left + 18}" y="{y}">{label}</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default="out/qemu-system-x86_64")
    ap.add_argument("--server",
                    default="out/libvfio-user-build/samples/gpio-pci-idio-16")
    ap.add_argument("--unpatched", help="unpatched qemu-system-x86_64")
    ap.add_argument("--accel", action="append", choices=["tcg", "kvm"])
    ap.add_argument("--csv")
    ap.add_argument("--svg")
    ap.add_argument("--markdown", help="write the table as Markdown here")
    ap.add_argument("--tap", action="store_true",
                    help="emit TAP: 0 removals with the default machine "
                         "types, more than 0 without barriers")
    opts = ap.parse_args()

    accels = opts.accel or ["tcg", "kvm"]
    notes = []
    if "kvm" in accels and not kvm_usable():
        accels.remove("kvm")
        notes.append("KVM skipped: /dev/kvm is not usable on this machine")
    for n in notes:
        log(n)

    rows = []
    plan = [(a, c) for a in accels for c in configs(opts.qemu,
                                                    opts.unpatched)]
    if opts.tap:
        print(f"1..{len(plan) + (1 if notes else 0)}")
    with tempfile.TemporaryDirectory(prefix="dma-churn-") as tmp:
        for i, (accel, (kind, label, binary, machine, barriers)) in \
                enumerate(plan, 1):
            log(f"[{i}/{len(plan)}] {machine} {accel}: {label} ...")
            workdir = os.path.join(tmp, str(i))
            os.makedirs(workdir)
            try:
                r = run_one(binary, opts.server, machine, accel, barriers,
                            workdir)
            except Exception as e:            # report, keep going
                keep = os.path.join("out", "dma-churn-failed", str(i))
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(workdir, keep)
                log(f"    failed: {e} (files: {keep})")
                if opts.tap:
                    print(f"not ok {i} {kind} {accel} {label}: {e}")
                rows.append(None)
                continue
            r.update(machine=kind, machine_type=machine, accel=accel,
                     configuration=label)
            rows.append(r)
            log(f"    {r['removals']} removals, {human(r['bytes'])} unmapped,"
                f" POST in {r['boot_s']} s")
            if opts.tap:
                want_zero = label.startswith("patched, 10.2 type")
                good = (r["removals"] == 0) if want_zero else \
                    (r["removals"] > 0 if label.startswith("patched") else
                     True)
                # The cross-checks must agree with the device's view.
                if r["trace"] is not None and r["trace"] != r["removals"]:
                    good = False
                if r["memslot"] is not None and want_zero and r["memslot"]:
                    good = False
                print(f"{'ok' if good else 'not ok'} {i} {kind} {accel} "
                      f"{label}: {r['removals']} removals"
                      f" (trace {r['trace']}, memslot {r['memslot']}), "
                      f"expected {'0' if want_zero else '> 0'}")
    if opts.tap and notes:
        print(f"ok {len(plan) + 1} # SKIP {notes[0]}")

    rows = [r for r in rows if r]
    header = ["machine", "accel", "configuration", "removals",
              "bytes unmapped", "trace", "memslot", "POST s"]
    table = [[r["machine"], r["accel"], r["configuration"],
              str(r["removals"]), human(r["bytes"]),
              "-" if r["trace"] is None else str(r["trace"]),
              "-" if r["memslot"] is None else str(r["memslot"]),
              f"{r['boot_s']:.1f}"] for r in rows]
    out = sys.stderr if opts.tap else sys.stdout
    print("", file=out)
    print(text_table(header, table), file=out)
    print("removals: vfio-user 'removing DMA region' entries that take away "
          "guest RAM above 1 MiB;\ntrace: address_space_topology_del events "
          "for it; memslot: KVM memory slots over it deleted", file=out)
    for n in notes:
        print(n, file=out)

    if opts.csv:
        write_csv(opts.csv,
                  ["machine", "machine_type", "accel", "configuration",
                   "removals", "bytes_unmapped", "trace_removals",
                   "memslot_removals", "post_seconds"],
                  [[r["machine"], r["machine_type"], r["accel"],
                    r["configuration"], r["removals"], r["bytes"], r["trace"],
                    r["memslot"], r["boot_s"]] for r in rows])
    if opts.svg and rows:
        write_svg(rows, opts.svg)
    if opts.markdown:
        write_markdown(opts.markdown, header, table, notes)
    if opts.csv or opts.svg:
        print("written: " + ", ".join(p for p in (opts.csv, opts.svg,
                                                   opts.markdown) if p),
              file=out)
    return 0 if len(rows) == len(plan) else 1


if __name__ == "__main__":
    sys.exit(main())
