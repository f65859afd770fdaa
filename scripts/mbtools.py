"""Small helpers shared by the harness's Python scripts."""

import contextlib
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

GiB = 1 << 30


class HostLimit(Exception):
    """The host cannot run this configuration (reported as skipped)."""


# Guest RAM backends, the memory dimension of the end-to-end tests:
# name -> (label, hugepage size in KiB or None for the base page,
#          NUMA nodes).  2 GiB of guest RAM, all below 4 GiB on pc and q35.
# One node: memory-backend-memfd "mem"; two nodes: two memory-backend-file
# objects on hugetlbfs (mem0, mem1: 1 GiB each, node 1 at 1 GiB).
GUEST_RAM = {
    "memfd": ("memfd 4 KiB", None, 1),
    "memfd-2M": ("memfd hugetlb 2 MiB", 2048, 1),
    "memfd-1G": ("memfd hugetlb 1 GiB", 1048576, 1),
    "file-2M-numa": ("hugetlbfs file 2 MiB, 2 NUMA nodes", 2048, 2),
    "file-2M-1G-numa": ("hugetlbfs files 2 MiB and 1 GiB, 2 NUMA nodes",
                        2048, 2),
}
# Backends whose NUMA nodes have different page sizes: per node, in KiB
# (GUEST_RAM's page size is the first node's).
NODE_PAGES = {"file-2M-1G-numa": (2048, 1048576)}
RAM_SIZE = 2 * GiB
HUGEPAGES = "/sys/kernel/mm/hugepages/hugepages-{}kB/{}"


def page_label(kb):
    return "4 KiB" if kb is None else \
        (f"{kb >> 20} GiB" if kb >= 1 << 20 else f"{kb >> 10} MiB")


def node_pages(name):
    """The page size of each NUMA node of a GUEST_RAM backend, in KiB."""
    _, kb, nodes = GUEST_RAM[name]
    return NODE_PAGES.get(name, (kb,) * nodes)


def ram_short(name):
    """A table's label of a GUEST_RAM backend: "2 MiB", "2 MiB, 2 nodes"."""
    _, kb, nodes = GUEST_RAM[name]
    if name in NODE_PAGES:
        return (" + ".join(page_label(k) for k in NODE_PAGES[name]) +
                f" files, {nodes} nodes")
    return page_label(kb) + (f" file, {nodes} nodes" if nodes > 1 else "")


def _hugepages(kb, what, value=None):
    path = HUGEPAGES.format(kb, what)
    if value is None:
        with open(path) as f:
            return int(f.read())
    with open(path, "w") as f:
        f.write(str(value))


@contextlib.contextmanager
def hugepages(kb, count):
    """At least `count` free hugepages of `kb` KiB while the block runs;
    the pool goes back to its size before.  Raises HostLimit, with the
    reason, when this host cannot reserve them."""
    size = page_label(kb)
    if not os.path.exists(HUGEPAGES.format(kb, "nr_hugepages")):
        raise HostLimit(f"this host's kernel has no {size} hugepages")
    before = _hugepages(kb, "nr_hugepages")
    need = max(0, count - _hugepages(kb, "free_hugepages"))
    try:
        if need:
            try:
                _hugepages(kb, "nr_hugepages", before + need)
            except OSError as e:
                raise HostLimit(f"cannot reserve {count} {size} hugepages: "
                                f"{e.strerror}") from None
        free = _hugepages(kb, "free_hugepages")
        if free < count:
            raise HostLimit(f"the host reserved {free} of the {count} "
                            f"{size} hugepages needed (memory "
                            "fragmented or short)")
        yield
    finally:
        if need:
            _hugepages(kb, "nr_hugepages", before)


@contextlib.contextmanager
def hugetlbfs(kb):
    """A private hugetlbfs mount with `kb` KiB pages: its path."""
    path = tempfile.mkdtemp(prefix="mb-hugetlbfs-")
    r = subprocess.run(["mount", "-t", "hugetlbfs", "-o", f"pagesize={kb}K",
                        "mb-hugetlbfs", path], capture_output=True, text=True)
    if r.returncode:
        os.rmdir(path)
        raise HostLimit("cannot mount hugetlbfs: " +
                        (r.stderr.strip() or f"mount exited {r.returncode}"))
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=False)
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def guest_ram_pool(name):
    """What guest RAM `name` needs from the host, for every run in the
    block: hugepages reserved (2 GiB of them), hugetlbfs mounted for the
    file backends.  Yields {page size in KiB: mount} for the file backends
    (one mount per page size), else None."""
    _, kb, nodes = GUEST_RAM[name]
    if kb is None:
        yield None
        return
    if nodes > 1:
        # one hugetlbfs mount per page size: {KiB: path}
        pages = node_pages(name)
        with contextlib.ExitStack() as stack:
            mounts = {}
            for k in dict.fromkeys(pages):
                per_node = (RAM_SIZE // nodes) // (k << 10)
                stack.enter_context(hugepages(k, per_node * pages.count(k)))
                mounts[k] = stack.enter_context(hugetlbfs(k))
            yield mounts
        return
    with hugepages(kb, RAM_SIZE // (kb << 10)):
        yield None


def by_guest_ram(plan, memory_of, tmp, describe):
    """Run through `plan` grouped by guest RAM backend (memory_of(item)),
    holding each backend's guest_ram_pool() while its items run.  For each
    item, print progress ("[i/n] describe(item) ...") and make a work
    directory below `tmp`; yield (number from 1, item, description, work
    directory, hugetlbfs mount or None, skip): skip is the reason the host
    could not provide the pool (raise it as HostLimit), else None."""
    order = list(dict.fromkeys(memory_of(it) for it in plan))
    plan = sorted(plan, key=lambda it: order.index(memory_of(it)))
    i = 0
    for mem in order:
        items = [it for it in plan if memory_of(it) == mem]
        with contextlib.ExitStack() as stack:
            try:
                mount, skip = stack.enter_context(guest_ram_pool(mem)), None
            except HostLimit as e:
                mount, skip = None, f"{GUEST_RAM[mem][0]}: {e}"
            for it in items:
                i += 1
                what = describe(it)
                print(f"[{i}/{len(plan)}] {what} ...", file=sys.stderr,
                      flush=True)
                workdir = os.path.join(tmp, str(i))
                os.makedirs(workdir)
                yield i, it, what, workdir, mount, skip


class GuestRam:
    """The QEMU options of one guest RAM backend, for one run, and how to
    tell its memory in a peer's mappings: fds (a path fragment, as strace
    -y and /proc/PID/maps show it) and the guest physical address at their
    offset 0."""

    def __init__(self, name, mount=None, tag="guest"):
        self.name = name
        self.label, self.kb, self.nodes = GUEST_RAM[name]
        self.files = []
        if self.nodes > 1:
            self.files = [os.path.join(mount[k], f"{tag}-node{i}")
                          for i, k in enumerate(node_pages(name))]

    def args(self):
        """-object (and -numa) options; the machine option is
        machine_option()."""
        if self.nodes == 1:
            opts = f"memory-backend-memfd,id=mem,size={RAM_SIZE},share=on"
            if self.kb:
                opts += f",hugetlb=on,hugetlbsize={self.kb << 10}"
            return ["-object", opts]
        args = []
        for i, f in enumerate(self.files):
            args += ["-object", f"memory-backend-file,id=mem{i},"
                     f"size={RAM_SIZE // self.nodes},share=on,mem-path={f}",
                     "-numa", f"node,nodeid={i},memdev=mem{i}"]
        return args

    def machine_option(self):
        return ",memory-backend=mem" if self.nodes == 1 else ""

    def fd_bases(self):
        """{path fragment: guest physical address of its offset 0}"""
        if self.nodes == 1:
            return {"memfd:": 0}
        return {f: i * (RAM_SIZE // self.nodes)
                for i, f in enumerate(self.files)}

    def cleanup(self):
        """Give the pages of the files back (hugetlbfs keeps them)."""
        for f in self.files:
            if os.path.exists(f):
                os.unlink(f)


def add_churn_args(ap, setups, ovmf_dir, tap_help):
    """The options dma_churn.py and vhost_churn.py share: what to compare,
    which setups, where OVMF is, where the results go, TAP."""
    ap.add_argument("--unpatched", help="unpatched qemu-system-x86_64")
    ap.add_argument("--alternative",
                    help="the comparison variant's qemu-system-x86_64 "
                    "(alternative-patches/: ram-below-4g unmergeable)")
    ap.add_argument("--setup", action="append", choices=list(setups),
                    help="run only these setups (default: all)")
    ap.add_argument("--memory", action="append", choices=list(GUEST_RAM),
                    help="guest RAM backends to run on (default: all)")
    ap.add_argument("--ovmf-dir", default=ovmf_dir)
    ap.add_argument("--csv")
    ap.add_argument("--svg")
    ap.add_argument("--markdown", help="write the table as Markdown here")
    ap.add_argument("--tap", action="store_true", help=tap_help)


ALTERNATIVE = "alternative, 10.2 type (unmergeable)"


def reference_rows(unpatched, alternative, mtype):
    """The rows every setup gets besides the series' own: unpatched 10.2.2
    and the comparison variant, both on the newest machine type."""
    rows = []
    if unpatched:
        rows.append(("unpatched 10.2.2", unpatched, mtype))
    if alternative:
        rows.append((ALTERNATIVE, alternative, mtype))
    return rows


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


def start_vfio_user_server(server, sock, log_path, timeout=10):
    """libvfio-user's sample server (verbose) on a UNIX socket, once it
    listens; its output goes to log_path."""
    with open(log_path, "wb") as out:
        srv = subprocess.Popen([server, "-v", sock], stdout=out,
                               stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while not os.path.exists(sock):
        if srv.poll() is not None or time.time() > deadline:
            stop(srv, 5)
            raise RuntimeError(f"vfio-user server did not start "
                               f"(log: {log_path})")
        time.sleep(0.02)
    return srv


def wait_migration(qmp, timeout=120):
    """Poll query-migrate on the source until the migration ends (or
    `timeout` seconds pass); its last status."""
    deadline = time.time() + timeout
    while True:
        status = qmp.cmd("query-migrate").get("status")
        if status in ("completed", "failed", "cancelled") or \
                time.time() > deadline:
            return status
        time.sleep(0.1)


def wait_running(qmp, timeout=30):
    """Poll query-status until the guest runs (or `timeout` seconds pass);
    the last status."""
    deadline = time.time() + timeout
    while True:
        status = qmp.cmd("query-status")["status"]
        if status == "running" or time.time() > deadline:
            return status
        time.sleep(0.1)


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
