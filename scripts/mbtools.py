"""Small helpers shared by the harness's Python scripts."""

import csv
import json
import socket
import subprocess
import time


def add_churn_args(ap, setups, ovmf_dir, tap_help):
    """The options dma_churn.py and vhost_churn.py share: what to compare,
    which setups, where OVMF is, where the results go, TAP."""
    ap.add_argument("--unpatched", help="unpatched qemu-system-x86_64")
    ap.add_argument("--setup", action="append", choices=list(setups),
                    help="run only these setups (default: all)")
    ap.add_argument("--ovmf-dir", default=ovmf_dir)
    ap.add_argument("--csv")
    ap.add_argument("--svg")
    ap.add_argument("--markdown", help="write the table as Markdown here")
    ap.add_argument("--tap", action="store_true", help=tap_help)


class Tap:
    """TAP output: check() prints one ok / not ok line; failed counts."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, good, desc):
        self.n += 1
        self.failed += not good
        print(f"{'ok' if good else 'not ok'} {self.n} {desc}", flush=True)


def connect_unix(path, timeout=30):
    """A stream socket connected to `path`, retried until something
    listens there (or `timeout` seconds pass)."""
    deadline = time.time() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.time() > deadline:
                raise
            time.sleep(0.05)


class QTestConn:
    """QEMU's qtest protocol over a connected socket."""

    def __init__(self, sock):
        self.sock = sock
        self.file = sock.makefile("rwb")

    def cmd(self, line):
        """Send one command; return its OK line, raise on FAIL.
        Asynchronous lines ("IRQ ...") are skipped."""
        self.file.write(line.encode() + b"\n")
        self.file.flush()
        while True:
            rsp = self.file.readline()
            if not rsp:
                raise EOFError("qtest connection closed")
            if rsp.startswith(b"FAIL"):
                raise RuntimeError(f"qtest {line}: {rsp!r}")
            if rsp.startswith(b"OK"):
                return rsp

    def pci_config_writeb(self, reg, val):
        """One byte of the host bridge's (00:00.0) configuration space."""
        self.cmd(f"outl 0xcf8 0x{0x80000000 | (reg & ~3):x}")
        self.cmd(f"outb 0x{0xcfc + (reg & 3):x} 0x{val:x}")

    def close(self):
        self.sock.close()


class QMP:
    """A QMP client on a UNIX socket (retries until QEMU listens)."""

    def __init__(self, path, timeout=30):
        self.sock = connect_unix(path, timeout)
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rwb")
        self._read()                       # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command, **args):
        """Send a command; return the whole response (return or error)."""
        self.file.write(json.dumps({"execute": command, "arguments": args})
                        .encode() + b"\n")
        self.file.flush()
        return self._read()

    def cmd(self, command, **args):
        """Send a command; return its result, raise on a QMP error."""
        rsp = self.execute(command, **args)
        if "error" in rsp:
            raise RuntimeError(f"{command}: {rsp['error']['desc']}")
        return rsp.get("return")

    def close(self):
        self.sock.close()


def stop(proc, timeout=20):
    """SIGTERM a process, then SIGKILL it if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def text_table(header, rows):
    """Rows of strings as an aligned plain-text table."""
    widths = [max([len(h)] + [len(r[i]) for r in rows])
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def write_markdown(path, header, rows, notes=()):
    with open(path, "w") as f:
        f.write("| " + " | ".join(header) + " |\n")
        f.write("|" + "|".join("---" for _ in header) + "|\n")
        for r in rows:
            f.write("| " + " | ".join(r) + " |\n")
        for n in notes:
            f.write(f"\n{n}\n")


def write_csv(path, header, rows):
    """None becomes an empty field."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if v is None else v for v in r])


def grouped_bars_svg(path, title, groups, labels, value):
    """A grouped bar chart as SVG: one group of bars per entry of `groups`
    (a tuple of caption lines), one bar per label (colour-keyed), the
    height value(group, label), or no bar where that is None."""
    w_bar, gap, top, left, height = 26, 14, 60, 60, 220
    cells = {(g, lb): value(g, lb) for g in groups for lb in labels}
    vmax = max([v for v in cells.values() if v is not None] + [4])
    colors = ["#888888", "#1f77b4", "#d62728", "#ff7f0e", "#2ca02c"]
    gw = max(len(labels) * w_bar, 120)
    width = max(620, left + len(groups) * (gw + gap * 2) + 40,
                left + 10 * len(title) + 20)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{top + height + 100 + 18 * len(labels)}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="24" font-size="15" font-weight="bold">'
           f'{title}</text>']
    for i in range(vmax + 1):
        y = top + height - i * height / vmax
        svg.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{width - 20}" '
                   f'y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 8}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{i}</text>')
    x = left + gap
    for g in groups:
        x0 = x + (gw - len(labels) * w_bar) / 2
        for j, label in enumerate(labels):
            n = cells[(g, label)]
            if n is None:
                continue
            h = n * height / vmax
            svg.append(f'<rect x="{x0 + j * w_bar}" '
                       f'y="{top + height - h:.1f}" width="{w_bar - 4}" '
                       f'height="{max(h, 1):.1f}" '
                       f'fill="{colors[j % len(colors)]}"/>'
                       f'<text x="{x0 + j * w_bar + (w_bar - 4) / 2}" '
                       f'y="{top + height - h - 4:.1f}" '
                       f'text-anchor="middle">{n}</text>')
        for k, text in enumerate(g):
            svg.append(f'<text x="{x + gw / 2}" '
                       f'y="{top + height + 18 + 15 * k}" '
                       f'text-anchor="middle">{text}</text>')
        x += gw + gap * 2
    for j, label in enumerate(labels):
        y = top + height + 60 + 18 * j
        svg.append(f'<rect x="{left}" y="{y - 10}" width="12" height="12" '
                   f'fill="{colors[j % len(colors)]}"/>'
                   f'<text x="{left + 18}" y="{y}">{label}</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")
