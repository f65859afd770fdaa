#!/usr/bin/env python3
"""What each DMA unmap of guest RAM above 1 MiB follows, while firmware boots.

Boots one machine with a vfio-user device (libvfio-user's gpio sample) and
SeaBIOS or OVMF, with QEMU's own trace events: the device's DMA listener
(vfio_listener_region_add_ram, vfio_listener_region_del), the host bridge's
PCI config writes (pci_cfg_write: PAM, SMRAM, ESMRAMC), and prints, for
every unmap of RAM above 1 MiB, the config writes since the previous DMA
listener event.  Works with any build
(unpatched, the alternative, the series): it uses no trace event of the
series.  Usage:

  trace_dma_unmaps.py --qemu BIN [--machine pc-q35-10.2] [--firmware F]
                      [--out FILE]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

from mblib.machine import (OVMF_DIR, connect_qmp, firmware_args, wait_boot)
from mblib.peers import VFIO_USER_SERVER, start_vfio_user_server
from mblib.qmp import stop

MiB = 1 << 20
DEL_RE = re.compile(r"vfio_listener_region_del region_del 0x([0-9a-f]+) - "
                    r"0x([0-9a-f]+)")
ADD_RE = re.compile(r"vfio_listener_region_add_ram region_add \[ram\] "
                    r"0x([0-9a-f]+) - 0x([0-9a-f]+)")
CFG_RE = re.compile(r"pci_cfg_write (\S+) (\S+) @0x([0-9a-f]+) <- 0x([0-9a-f]+)")
RESET_RE = re.compile(r"resettable_phase_hold_exec obj=0x[0-9a-f]+\((\S+)\)")
HOST_BRIDGES = ("mch", "i440FX")
REGISTERS = {  # the host bridge registers that change guest memory
    "mch": {0x90: "PAM0", 0x91: "PAM1", 0x92: "PAM2", 0x93: "PAM3",
            0x94: "PAM4", 0x95: "PAM5", 0x96: "PAM6", 0x9d: "SMRAM",
            0x9e: "ESMRAMC", 0x50: "EXT_TSEG_MBYTES", 0x9c: "F_SMBASE"},
    "i440FX": {0x59: "PAM0", 0x5a: "PAM1", 0x5b: "PAM2", 0x5c: "PAM3",
               0x5d: "PAM4", 0x5e: "PAM5", 0x5f: "PAM6", 0x72: "SMRAM"},
}


def timeline(text):
    """Lines: the device's DMA listener events, and the host bridge's
    memory register writes, in order."""
    out, started = [], False
    for line in text.splitlines():
        m = ADD_RE.search(line)
        if m:
            started = True
            out.append(("map", int(m.group(1), 16), int(m.group(2), 16)))
            continue
        m = DEL_RE.search(line)
        if m:
            out.append(("unmap", int(m.group(1), 16), int(m.group(2), 16)))
            continue
        m = RESET_RE.search(line)
        if m and m.group(1) in ("mch", "i440FX"):
            out.append(("write", "reset of the host bridge", None, started))
            continue
        m = CFG_RE.search(line)
        if m and m.group(1) in HOST_BRIDGES:
            reg = int(m.group(3), 16)
            name = REGISTERS[m.group(1)].get(reg)
            if name:
                out.append(("write", name, int(m.group(4), 16), started))
    return out


def describe(ev):
    text = ev[1] if ev[2] is None else f"{ev[1]} <- {ev[2]:#x}"
    return text + ("" if ev[3] else " (before the device mapped)")


def report(events):
    """For each unmap of RAM above 1 MiB: the host bridge writes (or reset)
    of the block of writes just before it."""
    lines, block, closed = [], [], True
    for ev in events:
        if ev[0] == "write":
            if closed:
                block, closed = [], False
            block.append(describe(ev))
            continue
        closed = True
        if ev[0] == "unmap" and ev[2] >= MiB and ev[2] - ev[1] > MiB:
            lines.append(f"unmap [{ev[1]:#x}, {ev[2] + 1:#x}) "
                         f"({(ev[2] + 1 - ev[1]) / (1 << 30):.2f} GiB) after: "
                         + (", ".join(block[-6:]) or
                            "nothing: while the machine was built"))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", required=True)
    ap.add_argument("--machine", default="pc-q35-10.2")
    ap.add_argument("--firmware", default="SeaBIOS",
                    choices=["SeaBIOS", "OVMF", "OVMF secboot"])
    ap.add_argument("--server", default=VFIO_USER_SERVER)
    ap.add_argument("--out", help="also write the full timeline here")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mb-trace-unmaps-") as tmp:
        sock = os.path.join(tmp, "vfio-user.sock")
        qmp_path = os.path.join(tmp, "qmp.sock")
        trace = os.path.join(tmp, "trace.log")
        err = os.path.join(tmp, "qemu.err")
        fw_args, watch, ends = firmware_args(opts.firmware, tmp, OVMF_DIR)
        mopts = opts.machine + (",smm=on" if opts.firmware == "OVMF secboot"
                                else "")
        srv = start_vfio_user_server(opts.server, sock,
                                     os.path.join(tmp, "server.log"))
        proc = None
        try:
            args = [opts.qemu, "-machine", mopts, "-accel", "tcg", "-m", "2G",
                    "-display", "none", "-nodefaults"] + fw_args + [
                    "-device", '{"driver": "vfio-user-pci", "socket": '
                    f'{{"path": "{sock}", "type": "unix"}}}}',
                    "-qmp", f"unix:{qmp_path},server=on,wait=off",
                    "-D", trace]
            for e in ("vfio_listener_region_add_ram",
                      "vfio_listener_region_del", "pci_cfg_write",
                      "resettable_phase_hold_exec"):
                args += ["-trace", f"enable={e}"]
            with open(err, "wb") as errf:
                proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=errf)
            qmp = connect_qmp(proc, qmp_path, err)
            wait_boot(proc, qmp, watch, ends, err)
            qmp.cmd("quit")
            qmp.close()
            proc.wait(timeout=30)
        finally:
            stop(proc, 5)
            stop(srv, 10)
        events = timeline(open(trace, errors="replace").read())
    head = (f"{os.path.basename(os.path.dirname(os.path.dirname(opts.qemu)))}"
            f" {opts.machine} {opts.firmware}, -m 2G, TCG")
    lines = report(events) or ["no unmap of RAM above 1 MiB"]
    print(head)
    for line in lines:
        print("  " + line)
    if opts.out:
        with open(opts.out, "a") as f:
            f.write(head + "\n")
            for ev in events:
                if ev[0] == "write":
                    f.write(f"  {describe(ev)}\n")
                else:
                    f.write(f"  {ev[0]} [{ev[1]:#x}, {ev[2] + 1:#x})\n")
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
