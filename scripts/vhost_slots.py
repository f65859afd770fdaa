#!/usr/bin/env python3
"""A slot-limited vhost-user backend next to merge barriers: DPDK.

OVS-DPDK's vhost-user backend is DPDK's vhost library.  It does not offer
VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS, so QEMU gives it at most 8
memory regions (VHOST_MEMORY_BASELINE_NREGIONS), and every memory device
(pc-dimm) takes one of them.  This experiment runs Debian's dpdk-testpmd
with the net_vhost vdev as the peer of a virtio-net-pci device and asks,
per machine type, guest RAM backend and QEMU build:

  works        the device carries packets: SeaBIOS boots the guest's
               network through iPXE (pxe-virtio.rom, the modern device id:
               disable-legacy=on), and testpmd receives the guest's DHCP
               packets after the boot and again after each of two guest
               resets (system_reset)
  SET_MEM_TABLE  the memory tables QEMU sent the backend (DPDK's log)
  regions      the regions of the last table, after the boot
  replay       firmware's PAM programming replayed with the device running
               (all PAM registers to 0, 0x33, 0x11): the tables that
               changed (DPDK unmaps and maps all guest RAM for each)
  DIMMs        how many 128 MiB pc-dimms QEMU accepts next to the backend
               at start-up (-m 1G,slots=8,maxmem=4G); the next one is
               refused with "a used vhost backend has not enough free
               memory slots left"

The guest has 1 GiB of RAM in a shared memfd (4 KiB pages, or hugetlb 2 MiB
pages), and each DIMM its own memfd of the same kind.  The DPDK peer and
the QEMU command line next to it (mblib/peers.py: TestPmd, qemu_args,
dimm_capacity) are shared with tests/e2e/migration-stock.py.

Usage: vhost_slots.py [--unpatched BIN] [--alternative BIN] [--variant LABEL=BIN ...] [--tap]
                      [--markdown F] [--csv F] [--memory NAME ...]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from mblib.guestram import HostLimit, hugepages, page_label
from mblib.machine import FAMILY, SEABIOS_END, reference_rows, replay_pam
from mblib.parsers import live_dma_regions
from mblib.peers import (DIMM_SIZE, GUEST_MB, SLOTS, TESTPMD,
                         VFIO_USER_SERVER, TestPmd, dimm_capacity, qemu_args,
                         ram_args, reset_and_wait, start_vfio_user_server,
                         wait_packets)
from mblib.qmp import QMP, QTestConn, connect_unix, stop
from mblib.report import Tap, log, text_table, write_csv, write_markdown

RESETS = 2
# memory name -> hugepage size in KiB (None: the base page)
MEMORY = {"memfd": None, "memfd-2M": 2048}


def run_one(qemu, cfg, kb, workdir):
    """Boot with the device, reset twice, replay PAM; then the DIMM
    capacity with a fresh backend."""
    r = {"works": False}
    pmd = TestPmd(workdir)
    qemu_proc = None
    try:
        qmp_path = os.path.join(workdir, "qmp.sock")
        qtest_path = os.path.join(workdir, "qtest.sock")
        err = os.path.join(workdir, "qemu.err")
        args = qemu_args(qemu, cfg, kb, pmd.sock, workdir, extra=[
            "-qmp", f"unix:{qmp_path},server=on,wait=off",
            "-qtest", f"unix:{qtest_path},server=on,wait=off"])
        with open(err, "wb") as errf:
            qemu_proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                         stderr=errf)
        qmp = QMP(qmp_path, timeout=60)
        rx = [wait_packets(pmd, qemu_proc, 0, "after the boot")]
        r["regions"] = len(pmd.tables()[-1][0]) if pmd.tables() else 0
        for i in range(RESETS):
            rx.append(reset_and_wait(pmd, qmp, qemu_proc,
                                     f"after reset {i + 1}"))
        r["rx"] = rx
        tables = pmd.tables()
        r["set_mem_table"] = len(tables)
        qt = QTestConn(connect_unix(qtest_path, timeout=30))
        replay_pam(qt, cfg["machine"])
        qt.close()
        time.sleep(0.5)
        after = pmd.tables()[len(tables):]
        r["replay_changed"] = sum(1 for _, same in after if not same)
        r["replay_set"] = len(after)
        r["qemu_errors"] = [line for line in open(err, errors="replace")
                            .read().splitlines() if "vhost" in line.lower()]
        r["works"] = not r["qemu_errors"] and pmd.proc.poll() is None
        qmp.cmd("quit")
        qmp.close()
        qemu_proc.wait(timeout=30)
    finally:
        stop(qemu_proc, 5)
        pmd.close()
    pmd = TestPmd(workdir, "testpmd-dimms")
    try:
        r["dimms"], r["refusal"] = dimm_capacity(qemu, cfg, kb, pmd, workdir)
    finally:
        pmd.close()
    if kb is None and os.path.exists(VFIO_USER_SERVER):
        r["vfu_dimms"], r["vfu_refusal"] = vfio_user_capacity(
            qemu, cfg, os.path.abspath(VFIO_USER_SERVER), workdir)
    return r


def vfio_user_ok(qemu, cfg, server, workdir, dimms):
    """Boot SeaBIOS with a vfio-user device (libvfio-user's gpio sample,
    at most 16 DMA regions) and `dimms` DIMMs: (every region mapped,
    regions mapped, the server's first refusal)."""
    sock = os.path.join(workdir, f"vfu{dimms}.sock")
    slog = os.path.join(workdir, f"vfu{dimms}.log")
    dbg = os.path.join(workdir, f"vfu{dimms}.dbg")
    err = os.path.join(workdir, f"vfu{dimms}.err")
    srv = start_vfio_user_server(server, sock, slog)
    proc = None
    try:
        mopts = cfg["machine_type"] + ",memory-backend=mem" + cfg["opts"]
        args = [qemu, "-machine", mopts, "-accel", "tcg",
                "-m", f"{GUEST_MB}M,slots=16,maxmem=8G",
                "-display", "none", "-nodefaults", "-serial", "none",
                "-chardev", f"file,id=dbg,path={dbg}",
                "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
                "-device", '{"driver": "vfio-user-pci", "socket": '
                f'{{"path": "{sock}", "type": "unix"}}}}'] + \
            ram_args(None, dimms)
        with open(err, "wb") as errf:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                    stderr=errf)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(dbg) and SEABIOS_END in open(dbg, "rb").read():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("SeaBIOS did not reach its end: " +
                               open(err, errors="replace").read()[-300:])
    finally:
        stop(proc, 5)
        stop(srv, 5)
    text = open(slog, errors="replace").read()
    bad = re.search(r"failed to add DMA region[^\n]*", text)
    return not bad, live_dma_regions(text), bad.group(0) if bad else ""


def vfio_user_capacity(qemu, cfg, server, workdir, lo=6, hi=14):
    """The most DIMMs (lo..hi) with which the vfio-user server maps every
    DMA region through a SeaBIOS boot; lo - 1 if none; and the server's
    refusal at one more."""
    best, refusal = lo - 1, ""
    for n in range(lo, hi + 1):
        ok, _, why = vfio_user_ok(qemu, cfg, server, workdir, n)
        if not ok:
            refusal = why
            break
        best = n
    return best, refusal


def configs(patched, unpatched, variants, alternative=None):
    """(label, binary, machine kind, machine type, extra machine options)."""
    out = []
    for kind in ("pc", "q35"):
        fam = FAMILY[kind]
        rows = [(label, binary, mtype, "") for label, binary, mtype
                in reference_rows(unpatched, alternative, f"{fam}-10.2")]
        rows += [("patched, 10.1 type", patched, f"{fam}-10.1", ""),
                 ("patched, 10.2 type (default)", patched, f"{fam}-10.2", ""),
                 ("patched, merge-layout=latest on 10.1", patched,
                  f"{fam}-10.1", ",merge-layout=latest"),
                 ("patched, 10.2 type, merge-barriers=1M", patched,
                  f"{fam}-10.2", ",merge-barriers=1M")]
        for label, binary in variants:
            rows.append(("vhost policy: " + label, binary, f"{fam}-10.2", ""))
        out += [dict(label=lb, qemu=b, machine=kind, machine_type=mt,
                     opts=o) for lb, b, mt, o in rows]
    return out


HEADER = ["machine", "memory", "configuration", "device works",
          "SET_MEM_TABLE", "regions", "replay: tables changed",
          "DIMMs accepted", "vfio-user: DIMMs, every region mapped"]


def row_cells(cfg, mem, r):
    if "skip" in r:
        return [cfg["machine"], mem, cfg["label"], "skipped: " + r["skip"]] \
            + ["-"] * 5
    if "error" in r:
        return [cfg["machine"], mem, cfg["label"], "no: " + r["error"]] \
            + ["-"] * 5
    return [cfg["machine"], mem, cfg["label"],
            "yes" if r["works"] else "no: " + "; ".join(r["qemu_errors"]),
            str(r["set_mem_table"]), str(r["regions"]),
            str(r["replay_changed"]), str(r["dimms"]),
            str(r["vfu_dimms"]) if "vfu_dimms" in r else "-"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qemu", default="out/qemu-system-x86_64")
    ap.add_argument("--unpatched")
    ap.add_argument("--alternative",
                    help="the board-only comparison build, on the 10.2 types")
    ap.add_argument("--variant", action="append", default=[],
                    help="LABEL=BIN: another build on the 10.2 types")
    ap.add_argument("--memory", action="append", choices=list(MEMORY))
    ap.add_argument("--tap", action="store_true")
    ap.add_argument("--markdown")
    ap.add_argument("--csv")
    a = ap.parse_args()
    if not os.path.exists(TESTPMD):
        sys.exit(f"no {TESTPMD}: install Debian's dpdk-dev and "
                 "librte-net-vhost23 (scripts/deps.sh e2e)")
    variants = [v.split("=", 1) for v in a.variant]
    plan = [(cfg, mem) for mem in (a.memory or list(MEMORY))
            for cfg in configs(os.path.abspath(a.qemu),
                               a.unpatched and os.path.abspath(a.unpatched),
                               [(lb, os.path.abspath(b))
                                for lb, b in variants],
                               a.alternative and
                               os.path.abspath(a.alternative))]
    results = []
    tap = Tap()
    if a.tap:
        mems = a.memory or list(MEMORY)
        print(f"1..{len(plan) * 2 + 2 * len(mems) + 2 * ('memfd' in mems)}")
    with tempfile.TemporaryDirectory(prefix="mb-vhost-slots-") as tmp:
        for i, (cfg, mem) in enumerate(plan, 1):
            kb = MEMORY[mem]
            what = f"{cfg['machine']} {page_label(kb)} {cfg['label']}"
            log(f"[{i}/{len(plan)}] {what} ...")
            workdir = os.path.join(tmp, str(i))
            os.makedirs(workdir)
            try:
                need = (GUEST_MB << 20) + (SLOTS + 1) * DIMM_SIZE
                with hugepages(kb, need // (kb << 10)) if kb else \
                        _nothing():
                    r = run_one(cfg["qemu"], cfg, kb, workdir)
            except HostLimit as e:
                r = {"skip": str(e)}
            except (RuntimeError, OSError, EOFError,
                    subprocess.TimeoutExpired) as e:
                r = {"error": str(e)[:300]}
            results.append((cfg, page_label(kb), r))
            if a.tap:
                tap_rows(tap, cfg, page_label(kb), r)
    if a.tap:
        tap_compare(tap, results)
    rows = [row_cells(c, m, r) for c, m, r in results]
    print(text_table(HEADER, rows), file=sys.stderr if a.tap else sys.stdout)
    notes = ["The peer: dpdk-testpmd (Debian's DPDK 22.11) with net_vhost, "
             f"{SLOTS} memory regions (no configurable memory slots); "
             f"guest -m {GUEST_MB}M,slots={SLOTS},maxmem=4G, TCG, SeaBIOS "
             "network boot through iPXE; made by scripts/vhost_slots.py."]
    if a.markdown:
        write_markdown(a.markdown, HEADER, rows, notes)
    if a.csv:
        write_csv(a.csv, HEADER, rows)
    return 1 if tap.failed else 0


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def tap_rows(tap, cfg, mem, r):
    desc = f"{cfg['machine']} {mem} {cfg['label']}"
    if "skip" in r:
        tap.check(True, f"{desc}: device carries packets # SKIP {r['skip']}")
        tap.check(True, f"{desc}: DIMMs # SKIP {r['skip']}")
        return
    if "error" in r:
        tap.check(False, f"{desc}: {r['error']}")
        tap.check(False, f"{desc}: DIMMs not measured")
        return
    tap.check(r["works"], f"{desc}: the device carries packets after the "
              f"boot and {RESETS} resets (testpmd RX {r['rx']}), no vhost "
              f"error ({r['qemu_errors'] or 'none'})")
    tap.check(r["dimms"] >= 0, f"{desc}: {r['dimms']} DIMMs accepted next "
              f"to the {SLOTS}-region backend, {r['regions']} region(s) "
              "after boot")


def tap_compare(tap, results):
    """With the defaults, every count equals stock's: the DIMMs accepted
    and the regions, per machine and memory; the old types and
    merge-layout=latest too."""
    ref = {(c["machine"], m): r for c, m, r in results
           if c["label"] == "unpatched 10.2.2" and "dimms" in r}
    for kind in ("pc", "q35"):
        for mem in sorted({m for _, m, _ in results}):
            stock = ref.get((kind, mem))
            mine = {c["label"]: r for c, m, r in results
                    if c["machine"] == kind and m == mem and "dimms" in r}
            if stock is None:
                for _ in range(1 + (mem == "4 KiB")):
                    tap.check(True, f"{kind} {mem}: no unpatched 10.2.2 row "
                              "to compare with # SKIP run with --unpatched")
                continue
            d = mine.get("patched, 10.2 type (default)")
            tap.check(d is not None and d["dimms"] == stock["dimms"] and
                      d["regions"] == stock["regions"],
                      f"{kind} {mem}: the 10.2 defaults accept as many DIMMs "
                      f"({d and d['dimms']}) and use as many regions "
                      f"({d and d['regions']}) as stock 10.2.2 "
                      f"({stock['dimms']}, {stock['regions']}) next to DPDK")
            if mem != "4 KiB":
                continue
            # vfio-user: the defaults cost the server no DMA region once
            # SeaBIOS has booted: the 1 MiB barrier splits where PAM splits
            # anyway, and q35's TSEG barrier waits for firmware to enable
            # TSEG, which SeaBIOS does not.
            label = "patched, 10.2 type (default)"
            d = mine.get(label, {})
            tap.check(d.get("vfu_dimms") is not None and
                      d.get("vfu_dimms") == stock.get("vfu_dimms"),
                      f"{kind}: {label}: the vfio-user server maps every "
                      f"region with as many DIMMs ({d.get('vfu_dimms')}) as "
                      f"with stock 10.2.2 ({stock.get('vfu_dimms')})")


if __name__ == "__main__":
    sys.exit(main())
