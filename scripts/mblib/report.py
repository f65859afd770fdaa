"""What the experiments print and write: TAP lines, progress on
stderr, plain-text and Markdown tables with their measurement stamp,
CSV files and grouped bar charts (SVG).
"""

import csv
import os
import sys
import time

from .guestram import page_label


class Tap:
    """TAP output: check() prints one ok / not ok line; failed counts."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, good, desc):
        self.n += 1
        self.failed += not good
        print(f"{'ok' if good else 'not ok'} {self.n} {desc}", flush=True)


def text_table(header, rows):
    """Rows of strings as an aligned plain-text table."""
    widths = [max([len(h)] + [len(r[i]) for r in rows])
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def machine_facts():
    """What the machine offers the measurements: cores, KVM, page sizes."""
    kvm = "usable" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "absent"
    hp = "/sys/kernel/mm/hugepages"
    sizes = sorted(int(d.split("-")[1][:-2]) for d in os.listdir(hp)) \
        if os.path.isdir(hp) else []
    pages = ", ".join(page_label(kb) for kb in sizes) or "none"
    return f"{os.cpu_count()} cores, /dev/kvm {kvm}, hugepage sizes {pages}"


def measurement_stamp():
    """When, where and by what command a table was measured."""
    argv = [os.path.relpath(sys.argv[0])] + sys.argv[1:]
    cmd = " ".join(a if a and all(c.isalnum() or c in "-_./=,:"
                                  for c in a) else repr(a) for a in argv)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"Measured {when} on {machine_facts()}; command: `{cmd}`."


def write_markdown(path, header, rows, notes=()):
    """A markdown table, its notes, and the measurement stamp."""
    with open(path, "w") as f:
        f.write("| " + " | ".join(header) + " |\n")
        f.write("|" + "|".join("---" for _ in header) + "|\n")
        for r in rows:
            f.write("| " + " | ".join(r) + " |\n")
        for n in notes:
            f.write(f"\n{n}\n")
        f.write(f"\n_{measurement_stamp()}_\n")


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


def log(msg):
    print(msg, file=sys.stderr, flush=True)
