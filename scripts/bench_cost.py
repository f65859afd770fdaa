#!/usr/bin/env python3
"""Cost of merge barriers: memory topology updates, unpatched vs patched.

Each run starts QEMU with the qtest accelerator on pc-i440fx-10.2 and writes
the i440fx PAM registers through the qtest protocol, as firmware does: every
write is one memory transaction that re-renders the flat views and updates
the listeners.  We measure the CPU time QEMU spends on a batch of writes
(from /proc/PID/stat, so the driver's own time does not count), for:

  unpatched QEMU 10.2.2, and patched QEMU with 0, 1 (1 MiB), 16 and 64 (the
  maximum) merge barriers.  "in RAM": beyond 1 MiB every 8 MiB inside RAM,
  each one a section more in the view; "in hole": 1 MiB, then every 16 MiB
  from 2 GiB where nothing is mapped, the cost of the barrier check alone.
  And q35 with intel-iommu (pc-q35-10.2, the q35 PAM registers): unpatched,
  and patched with its default barriers (1 MiB and the TSEG base), which
  then also apply in the IOMMU's view of memory (one more view to split);
  its ratio is to unpatched q35 with intel-iommu.

Configurations are interleaved round by round (order rotated each round) and
reported as the median ratio to unpatched with the min-max spread.  A second,
noise-free figure comes from callgrind: instructions executed inside
memory_region_transaction_commit() per PAM write.  Last, the size of the
system memory view after SeaBIOS POST (FlatRanges of AS "memory").
"""

import argparse
import csv
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from mblib.qmp import QTestConn, stop
from mblib.report import log, text_table, write_csv, write_markdown

MiB = 1 << 20
PAM0 = 0x59
CLK_TCK = os.sysconf("SC_CLK_TCK")


def barriers(n, where="ram"):
    """1 MiB, then every 8 MiB inside RAM ("ram"), or every 16 MiB from
    2 GiB on, where nothing is mapped with 1 GiB of RAM ("hole")."""
    if n == 0:
        return ""
    if where == "ram":
        addrs = [MiB + i * 8 * MiB for i in range(n)]
    else:
        addrs = [MiB] + [2048 * MiB + i * 16 * MiB for i in range(n - 1)]
    # ',,' is the command line's escape for a comma inside a value
    return ",,".join(str(a) for a in addrs)


class QTest:
    """Minimal client of QEMU's qtest protocol."""

    def __init__(self, qemu, machine_opts, workdir, prefix=(), devices=()):
        path = os.path.join(workdir, "qtest.sock")
        if os.path.exists(path):
            os.unlink(path)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        args = list(prefix) + [qemu, "-qtest", f"unix:{path}",
                               "-accel", "qtest", "-machine", machine_opts,
                               "-m", "1G", "-display", "none",
                               "-nodefaults", "-serial", "none"]
        for d in devices:
            args += ["-device", d]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(workdir,
                                                              "qemu.err"),
                                                 "wb"))
        srv.settimeout(0.2)
        deadline = time.time() + 120
        while True:
            try:
                self.sock, _ = srv.accept()
                break
            except socket.timeout:
                if self.proc.poll() is not None or time.time() > deadline:
                    err = open(os.path.join(workdir, "qemu.err")).read()
                    raise RuntimeError(f"QEMU did not start: {err.strip()}")
        srv.close()
        self.sock.settimeout(None)
        self.conn = QTestConn(self.sock)

    def pam_write(self, reg, val):
        self.conn.pci_config_writeb(reg, val)

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def quit(self):
        # QEMU does not exit when the qtest client goes away; SIGTERM makes
        # it shut down cleanly (callgrind then writes its profile).
        self.sock.close()
        stop(self.proc, 60)


def pam_batch(qt, writes, pam0=PAM0):
    """Alternate PAM registers between RAM read/write and unmapped."""
    for i in range(writes):
        reg = pam0 + (i % 7)
        val = 0x33 if (i // 7) % 2 == 0 else 0x00
        if reg == pam0:
            val &= 0xf0
        qt.pam_write(reg, val)


def machine_opts(cfg):
    opts = cfg.get("machine", "pc-i440fx-10.2")
    if cfg["barriers"] is not None:
        opts += ",merge-barriers=" + barriers(cfg["barriers"],
                                              cfg.get("where", "ram"))
    return opts


def time_run(cfg, writes, workdir):
    qt = QTest(cfg["qemu"], machine_opts(cfg), workdir,
               devices=cfg.get("devices", ()))
    pam0 = cfg.get("pam0", PAM0)
    try:
        pam_batch(qt, 70, pam0)               # warm up
        t0 = qt.cpu_seconds()
        w0 = time.perf_counter()
        pam_batch(qt, writes, pam0)
        wall = time.perf_counter() - w0
        cpu = qt.cpu_seconds() - t0
    finally:
        qt.quit()
    return cpu, wall


def callgrind_run(cfg, writes, workdir):
    out = os.path.join(workdir, "callgrind.out")
    prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
              "--toggle-collect=memory_region_transaction_commit"]
    qt = QTest(cfg["qemu"], machine_opts(cfg), workdir, prefix,
               cfg.get("devices", ()))
    try:
        pam_batch(qt, writes, cfg.get("pam0", PAM0))
    finally:
        qt.quit()
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("no callgrind summary")


def view_size(cfg, workdir):
    """FlatRanges of AS "memory" after SeaBIOS POST (TCG)."""
    dbg = os.path.join(workdir, "dbg.log")
    mon = os.path.join(workdir, "mon.sock")
    for f in (dbg, mon):
        if os.path.exists(f):
            os.unlink(f)
    args = [cfg["qemu"], "-machine", machine_opts(cfg), "-accel", "tcg",
            "-m", "1G", "-display", "none", "-nodefaults", "-serial", "none",
            "-chardev", f"file,id=dbg,path={dbg}",
            "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
            "-monitor", f"unix:{mon},server=on,wait=off"]
    for d in cfg.get("devices", ()):
        args += ["-device", d]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (os.path.exists(dbg) and
                   b"No bootable device." in open(dbg, "rb").read()):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("no end of POST")
            time.sleep(0.05)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(mon)
        s.sendall(b"info mtree -f\nquit\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    text = data.decode(errors="replace").replace("\r", "")
    count, mine = 0, False
    for line in text.split("\n"):
        if line.startswith("FlatView #"):
            if mine:
                break
        elif line.startswith(' AS "memory",'):
            mine = True
        elif mine and re.match(r"\s+[0-9a-f]{16}-[0-9a-f]{16} ", line):
            count += 1
    return count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default="out/qemu-system-x86_64")
    ap.add_argument("--unpatched")
    ap.add_argument("--alternative",
                    help="the comparison variant (alternative-patches/)")
    ap.add_argument("--writes", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--callgrind-writes", type=int, default=210)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--csv")
    ap.add_argument("--svg")
    ap.add_argument("--markdown")
    ap.add_argument("--chart-from-csv", metavar="CSV",
                    help="only draw --svg from the --csv of an earlier run")
    opts = ap.parse_args()
    if opts.chart_from_csv:
        if not opts.svg:
            ap.error("--chart-from-csv needs --svg")
        write_svg(rows_from_csv(opts.chart_from_csv), opts.svg)
        return 0
    if not opts.unpatched:
        ap.error("--unpatched is required")

    cfgs = [{"name": "unpatched", "qemu": opts.unpatched, "barriers": None}]
    if opts.alternative:
        cfgs.append({"name": "alternative", "qemu": opts.alternative,
                     "barriers": None})
    cfgs.append({"name": "0 barriers", "qemu": opts.qemu, "barriers": 0})
    cfgs.append({"name": "1 barrier", "qemu": opts.qemu, "barriers": 1})
    for n in (16, 64):
        cfgs.append({"name": f"{n} in RAM", "qemu": opts.qemu,
                     "barriers": n, "where": "ram"})
    cfgs.append({"name": "64 in hole", "qemu": opts.qemu, "barriers": 64,
                 "where": "hole"})
    vtd = {"machine": "pc-q35-10.2", "pam0": 0x90,
           "devices": ["intel-iommu"], "base": "unpatched q35+vtd"}
    cfgs.append(dict(vtd, name="unpatched q35+vtd", qemu=opts.unpatched,
                     barriers=None))
    if opts.alternative:
        cfgs.append(dict(vtd, name="alternative q35+vtd",
                         qemu=opts.alternative, barriers=None))
    cfgs.append(dict(vtd, name="q35+vtd default", qemu=opts.qemu,
                     barriers=None))
    for c in cfgs:
        c["cpu"], c["wall"] = [], []

    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        total = opts.rounds * len(cfgs)
        k = 0
        for r in range(opts.rounds):
            order = cfgs[r % len(cfgs):] + cfgs[:r % len(cfgs)]
            for c in order:
                k += 1
                cpu, wall = time_run(c, opts.writes, tmp)
                c["cpu"].append(cpu)
                c["wall"].append(wall)
                log(f"[{k}/{total}] round {r + 1}: {c['name']:<12} "
                    f"{opts.writes} PAM writes: {cpu * 1e6 / opts.writes:7.1f}"
                    f" us CPU/write")
        if not opts.no_callgrind:
            for c in cfgs:
                log(f"callgrind: {c['name']} ({opts.callgrind_writes} "
                    f"writes) ...")
                c["ir"] = callgrind_run(c, opts.callgrind_writes, tmp) / \
                    opts.callgrind_writes
        for c in cfgs:
            log(f"view after POST: {c['name']} ...")
            c["ranges"] = view_size(c, tmp)

    rows = []
    for c in cfgs:
        base = next(b for b in cfgs if b["name"] == c.get("base",
                                                          "unpatched"))
        ratios = [a / b for a, b in zip(c["cpu"], base["cpu"])]
        rows.append({
            "configuration": c["name"],
            "us_per_write": statistics.median(c["cpu"]) * 1e6 / opts.writes,
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ir_per_commit": c.get("ir"),
            "ir_ratio": c["ir"] / base["ir"] if c.get("ir") else None,
            "ranges": c["ranges"],
        })

    header = ["configuration", "CPU us/write", "ratio (median)",
              "ratio spread", "instr/commit", "instr ratio",
              "FlatRanges after POST"]
    table = []
    for r in rows:
        table.append([
            r["configuration"], f"{r['us_per_write']:.1f}",
            f"{r['ratio']:.3f}",
            f"{r['ratio_min']:.3f}-{r['ratio_max']:.3f}",
            "-" if r["ir_per_commit"] is None else f"{r['ir_per_commit']:.0f}",
            "-" if r["ir_ratio"] is None else f"{r['ir_ratio']:.3f}",
            str(r["ranges"])])
    print()
    print(f"Memory topology update cost: {opts.writes} PAM writes per run, "
          f"{opts.rounds} interleaved rounds, pc-i440fx-10.2 (q35+vtd: "
          f"pc-q35-10.2 with intel-iommu, ratios to its unpatched row), "
          f"qtest accel")
    print(text_table(header, table))
    print("ratio: CPU time of QEMU for the same writes / unpatched, per round;"
          "\ninstr/commit: callgrind, instructions inside "
          "memory_region_transaction_commit() per write")
    print("KVM memory slots in steady state: "
          + ("see the dma-churn table" if os.access("/dev/kvm", os.R_OK)
             else "not measured (/dev/kvm is not usable on this machine)"))

    if opts.csv:
        write_csv(opts.csv,
                  ["configuration", "us_per_write_median", "ratio_median",
                   "ratio_min", "ratio_max", "instructions_per_commit",
                   "instructions_ratio", "flatranges_after_post"],
                  [[r["configuration"], round(r["us_per_write"], 2),
                    round(r["ratio"], 4), round(r["ratio_min"], 4),
                    round(r["ratio_max"], 4),
                    None if r["ir_per_commit"] is None
                    else round(r["ir_per_commit"]),
                    None if r["ir_ratio"] is None else round(r["ir_ratio"], 4),
                    r["ranges"]] for r in rows])
    if opts.markdown:
        write_markdown(opts.markdown, header, table)
    if opts.svg:
        write_svg(rows, opts.svg)
    return 0


def label_lines(x, y, text, width=11):
    """An x-axis label, broken into lines of at most @width characters so
    that neighbouring labels do not overlap."""
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    lines.append(cur)
    spans = "".join(f'<tspan x="{x}" dy="{0 if i == 0 else 14}">{line}'
                    '</tspan>' for i, line in enumerate(lines))
    return f'<text x="{x}" y="{y}" text-anchor="middle">{spans}</text>'


def rows_from_csv(path):
    """The rows write_svg() needs, from a --csv file of an earlier run."""
    def num(v):
        return float(v) if v not in ("", None) else None
    with open(path, newline="") as f:
        return [{"configuration": r["configuration"],
                 "ratio": num(r["ratio_median"]),
                 "ratio_min": num(r["ratio_min"]),
                 "ratio_max": num(r["ratio_max"]),
                 "ir_ratio": num(r["instructions_ratio"])}
                for r in csv.DictReader(f)]


def write_svg(rows, path):
    """Bars: median CPU ratio with its spread; dots: callgrind ratio."""
    left, top, height, bar, gap = 70, 50, 240, 60, 40
    vmax = max(1.2, max(r["ratio_max"] for r in rows) * 1.05,
               max((r["ir_ratio"] or 0) for r in rows) * 1.05)
    vmin = 0.0
    width = left + len(rows) * (bar + gap) + 40

    def y(v):
        return top + height - (v - vmin) / (vmax - vmin) * height
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{top + height + 86}" font-family="sans-serif" '
           'font-size="12">',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">'
           'Topology update cost relative to unpatched QEMU 10.2.2</text>']
    v = 0.0
    while v <= vmax + 1e-9:
        svg.append(f'<line x1="{left - 4}" y1="{y(v):.1f}" x2="{width - 20}"'
                   f' y2="{y(v):.1f}" stroke="#ddd"/><text x="{left - 8}" '
                   f'y="{y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
        v += 0.2
    svg.append(f'<line x1="{left}" y1="{y(1):.1f}" x2="{width - 20}" '
               f'y2="{y(1):.1f}" stroke="#333" stroke-dasharray="4 3"/>')
    for i, r in enumerate(rows):
        x = left + 20 + i * (bar + gap)
        svg.append(f'<rect x="{x}" y="{y(r["ratio"]):.1f}" width="{bar}" '
                   f'height="{y(0) - y(r["ratio"]):.1f}" fill="#1f77b4"/>'
                   f'<line x1="{x + bar / 2}" y1="{y(r["ratio_min"]):.1f}" '
                   f'x2="{x + bar / 2}" y2="{y(r["ratio_max"]):.1f}" '
                   'stroke="#000" stroke-width="2"/>'
                   f'<text x="{x + bar / 2}" y="{y(r["ratio_max"]) - 6:.1f}" '
                   f'text-anchor="middle">{r["ratio"]:.3f}</text>'
                   + label_lines(x + bar / 2, top + height + 18,
                                 r["configuration"]))
        if r["ir_ratio"]:
            # the stable figure: labelled with its value
            svg.append(f'<circle cx="{x + bar / 2}" cy="{y(r["ir_ratio"]):.1f}"'
                       ' r="5" fill="#d62728"/>'
                       f'<text x="{x + bar / 2 + 8}" '
                       f'y="{y(r["ir_ratio"]) + 4:.1f}" fill="#d62728">'
                       f'{r["ir_ratio"]:.3f}</text>')
    legend = top + height + 52
    svg.append(f'<rect x="{left}" y="{legend}" width="12" '
               'height="12" fill="#1f77b4"/><text x="{0}" y="{1}">'
               .format(left + 18, legend + 10) +
               'CPU time per PAM write (median, min-max)</text>'
               f'<circle cx="{left + 306}" cy="{legend + 6}" r="5" '
               f'fill="#d62728"/><text x="{left + 318}" '
               f'y="{legend + 10}">instructions per commit '
               '(callgrind, the stable figure)</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    sys.exit(main())
