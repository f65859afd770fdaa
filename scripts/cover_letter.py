#!/usr/bin/env python3
"""Write the cover letter of a patch queue.

QEMU (default): patches/0000-cover-letter.patch from docs/cover-letter.txt.
libvirt (--queue libvirt): libvirt-patches/0000-cover-letter.patch from
docs/libvirt-cover-letter.txt.  The first line of the text is the subject.
The QEMU text's placeholders take the latest measurements:
  @DMA_CHURN@   out/bench-dma-churn.md (make bench) or out/dma-churn.md (make)
  @VHOST_CHURN@ out/bench-vhost-churn.md (make bench) or out/vhost-churn.md
  @BENCH_COST@  out/bench-cost.md (make bench)
  @VHOST_SLOTS@ out/bench-vhost-slots.md (make bench) or out/vhost-slots.md
                (make check): consumers with a fixed number of mappings
  @COMPARE@     out/bench-compare.md (make bench): unpatched, the
                `unmergeable` alternative and the series; the alternative's
                rows are left out of the other two tables
The shortlog and diffstat come from the work tree (out/qemu-src,
debian-base..HEAD; out/libvirt-src, upstream-base..HEAD).

  cover_letter.py [--queue qemu|libvirt]          write the cover letter
  cover_letter.py [--queue qemu|libvirt] --check  fail if its patch list is not the series'
"""

import os
import re
import subprocess
import sys

# queue -> (work tree, base, cover letter, its text, the series' version)
QUEUES = {
    "qemu": ("out/qemu-src", "debian-base", "patches/0000-cover-letter.patch",
             "docs/cover-letter.txt", "v5"),
    "libvirt": ("out/libvirt-src", "upstream-base",
                "libvirt-patches/0000-cover-letter.patch",
                "docs/libvirt-cover-letter.txt", "v4"),
}
_queue = (sys.argv[sys.argv.index("--queue") + 1]
          if "--queue" in sys.argv[1:-1] else "qemu")
if _queue not in QUEUES:
    sys.exit(f"unknown queue '{_queue}' (qemu or libvirt)")
SRC, BASE, OUT, TEXT, VERSION = QUEUES[_queue]


def git(*args):
    return subprocess.run(["git", "-C", SRC, *args], check=True,
                          capture_output=True, text=True).stdout


# Narrower tables for a mail: no timing column, short configuration names.
DROP = {"boot s", "POST s"}
SHORT = {"patched, 10.2 type (default)": "10.2 default",
         "patched, merge-barriers= (off)": "10.2, barriers=",
         "patched, merge-barriers=1M (no TSEG barrier)": "10.2, barriers=1M",
         "patched, 10.1 type": "10.1",
         "unpatched 10.2.2": "unpatched",
         "alternative, 10.2 type (unmergeable)": "alternative",
         "configuration": "config", "bytes unmapped": "unmapped"}


def md_to_text(path, drop_rows=()):
    """A Markdown table (plus trailing notes) as an aligned text table,
    without the rows that contain any of drop_rows."""
    rows, notes, keep = [], [], None
    for line in open(path):
        line = line.rstrip("\n")
        if any(d in line for d in drop_rows):
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if keep is None:
                keep = [i for i, c in enumerate(cells) if c not in DROP]
            cells = [SHORT.get(cells[i], cells[i]) for i in keep]
            if not all(re.fullmatch(r"-+", c) for c in cells):
                rows.append(cells)
        elif line.strip():
            notes.append(line.strip())
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  " + "  ".join(c.ljust(w) for c, w in zip(rows[0], widths))
           .rstrip(),
           "  " + "  ".join("-" * w for w in widths)]
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in rows[1:]]
    return "\n".join(out + ["  " + n for n in notes])


def readme_table(key):
    """The committed copy of a bench table (docs/measurements/), as a
    temporary Markdown file."""
    marker = {"@DMA_CHURN@": "bench-dma-churn table",
              "@VHOST_CHURN@": "bench-vhost-churn table",
              "@BENCH_COST@": "bench-cost table",
              "@COMPARE@": "bench-compare table",
              "@VHOST_SLOTS@": "bench-vhost-slots table"}[key]
    docs = "docs/measurements"
    for name in sorted(os.listdir(docs)):
        text = open(os.path.join(docs, name), errors="replace").read()
        start = text.find(f"<!-- {marker} -->")
        end = text.find(f"<!-- end of {marker} -->")
        if start >= 0 and end >= 0:
            break
    else:
        return None
    path = os.path.join("out", f"readme-{marker.replace(' ', '-')}.md")
    os.makedirs("out", exist_ok=True)
    with open(path, "w") as f:
        f.write(text[text.index("\n", start) + 1:end])
    return path


def subjects():
    return git("log", "--reverse", "--format=%s", f"{BASE}..HEAD").split("\n")[:-1]


def main():
    if "--check" in sys.argv[1:]:
        text = open(OUT).read()
        missing = [s for s in subjects() if f"\n  {s}\n" not in text]
        n = len(subjects())
        tag = f"[PATCH {VERSION} 0/{n}]"
        ok = tag in text and not missing
        for s in missing:
            print(f"cover letter does not list: {s}")
        if tag not in text:
            print(f"cover letter is not {tag}")
        return 0 if ok else 1

    lines = open(TEXT).read().split("\n")
    subject, body = lines[0], "\n".join(lines[1:]).strip("\n")
    for key, paths in (("@DMA_CHURN@", ["out/bench-dma-churn.md",
                                        "out/dma-churn.md"]),
                       ("@VHOST_CHURN@", ["out/bench-vhost-churn.md",
                                          "out/vhost-churn.md"]),
                       ("@BENCH_COST@", ["out/bench-cost.md"]),
                       ("@COMPARE@", ["out/bench-compare.md"]),
                       ("@VHOST_SLOTS@", ["out/bench-vhost-slots.md",
                                          "out/vhost-slots.md"])):
        path = next((p for p in paths if os.path.exists(p)), None)
        if key in body:
            if not path:
                # The numbers last committed in docs/measurements (make bench
                # writes newer ones); say so rather than invent any.
                path = readme_table(key)
                if not path:
                    sys.exit(f"no measurements for {key}: run 'make bench'")
                print(f"{key}: no out/ measurements, using the committed table")
            drop = () if key in ("@COMPARE@", "@BENCH_COST@") else \
                ("alternative, 10.2 type (unmergeable)",)
            body = body.replace(key, md_to_text(path, drop))
    subj = subjects()
    author = git("log", "-1", "--format=%an <%ae>", "HEAD").strip()
    name = git("log", "-1", "--format=%an", "HEAD").strip()
    date = git("log", "-1", "--format=%ad", "--date=rfc2822", "HEAD").strip()
    stat = git("diff", "--stat=72", f"{BASE}..HEAD")
    text = (f"From 0000000000000000000000000000000000000000 Mon Sep 17 "
            f"00:00:00 2001\nFrom: {author}\nDate: {date}\n"
            f"Subject: [PATCH {VERSION} 0/{len(subj)}] {subject}\n\n"
            f"{body}\n\n"
            f"{name} ({len(subj)}):\n" +
            "".join(f"  {s}\n" for s in subj) + f"\n{stat}\n")
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
