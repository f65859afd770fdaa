"""The real peers the experiments run next to QEMU.

libvfio-user's sample vfio-user server; qemu-storage-daemon
exporting a vhost-user-blk device (under strace), with what tells
its mappings and failures; DPDK's dpdk-testpmd with a net_vhost port
and the QEMU command line and DIMMs next to it.
"""

import os
import re
import signal
import subprocess
import time

from .qmp import QMP, stop

# libvfio-user's sample server (gpio-pci-idio-16): a vfio-user peer
VFIO_USER_SERVER = "out/libvfio-user-build/samples/gpio-pci-idio-16"


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


# qemu-storage-daemon: a vhost-user-blk backend
# built by `make` (ninja target storage-daemon/qemu-storage-daemon)
QSD = "out/qemu-src/build/storage-daemon/qemu-storage-daemon"
IMAGE_SIZE = 64 << 20
SEABIOS_DISK_READ = b"Boot failed: not a bootable disk"


def guest_mappings(pid, fragments):
    """Live mappings of the guest memory fds in /proc/PID/maps."""
    with open(f"/proc/{pid}/maps") as f:
        return sum(1 for line in f if any(fr in line for fr in fragments))


def start_backend(qsd, workdir):
    """qemu-storage-daemon under strace, exporting an empty raw image as
    vhost-user-blk on a UNIX socket: (strace process, socket, qsd pid)."""
    img = os.path.join(workdir, "disk.raw")
    with open(img, "wb") as f:
        f.truncate(IMAGE_SIZE)
    sock = os.path.join(workdir, "vhost-user-blk.sock")
    pidfile = os.path.join(workdir, "qsd.pid")
    args = ["strace", "-f", "-ttt", "-y", "-e", "trace=mmap,munmap",
            "-o", os.path.join(workdir, "strace.log"), qsd,
            "--blockdev",
            f"driver=file,node-name=disk,filename={img}",
            "--export", "type=vhost-user-blk,id=exp0,node-name=disk,"
            f"addr.type=unix,addr.path={sock},writable=on",
            "--pidfile", pidfile]
    with open(os.path.join(workdir, "qsd.log"), "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while not (os.path.exists(sock) and os.path.exists(pidfile) and
               open(pidfile).read().strip()):
        if proc.poll() is not None or time.time() > deadline:
            stop(proc, 5)
            raise RuntimeError("qemu-storage-daemon did not start: " +
                               open(os.path.join(workdir, "qsd.log"))
                               .read().strip()[-500:])
        time.sleep(0.02)
    return proc, sock, int(open(pidfile).read().strip())


def stop_backend(proc, pid):
    """End qemu-storage-daemon (the process strace runs), then strace."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    stop(proc, 5)


def backend_failure(backend, workdir):
    """What went wrong with the backend, or None while it is up and well:
    libvhost-user reports a broken device with vu_panic and drops it."""
    text = open(os.path.join(workdir, "qsd.log"), errors="replace").read()
    bad = [line for line in text.splitlines()
           if "vu_panic" in line or "error" in line.lower()]
    if bad:
        return "; ".join(bad[:3])
    if backend.poll() is not None:
        return f"qemu-storage-daemon exited ({backend.returncode})"
    return None


# DPDK's dpdk-testpmd: a vhost-user net backend with 8 memory regions
TESTPMD = "/usr/bin/dpdk-testpmd"
PXE_ROM = "/usr/lib/ipxe/qemu/pxe-virtio.rom"
DIMM_SIZE = 128 << 20
GUEST_MB = 1024
SLOTS = 8
PACKET_TIMEOUT = 120


class TestPmd:
    """dpdk-testpmd with a net_vhost port on a UNIX socket (vhost-user
    server), forwarding (io mode) in interactive mode.  Its own memory is
    ordinary pages (--no-huge); its standard input stays open (it exits at
    end of input)."""

    def __init__(self, workdir, name="testpmd"):
        self.sock = os.path.join(workdir, f"{name}.sock")
        self.log = os.path.join(workdir, f"{name}.log")
        # unbuffered: its answers are read while it runs
        args = ["stdbuf", "-o0", TESTPMD, "--no-huge", "-m", "256", "--no-pci",
                f"--file-prefix=mb-{os.getpid()}-{name}",
                "--vdev", f"net_vhost0,iface={self.sock}",
                "--log-level=lib.vhost.config:debug",
                "--", "-i", "--total-num-mbufs=2048", "--nb-cores=1"]
        self.out = open(self.log, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE,
                                     stdout=self.out,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while b"testpmd>" not in self.text(raw=True):
            if self.proc.poll() is not None or time.time() > deadline:
                stop(self.proc, 5)
                raise RuntimeError("dpdk-testpmd did not start: " +
                                   self.text()[-600:])
            time.sleep(0.1)
        self.send("start")

    def text(self, raw=False):
        with open(self.log, "rb") as f:
            data = f.read()
        return data if raw else data.decode(errors="replace")

    def send(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def rx_packets(self):
        """RX-packets of port 0, as "show port stats 0" reports now."""
        mark = f"mb-mark-{time.time()}"
        self.send(mark)                # not a command: echoed, then refused
        self.send("show port stats 0")
        deadline = time.time() + 10
        while time.time() < deadline:
            tail = self.text().split(mark)[-1]
            m = re.search(r"RX-packets:\s*(\d+)", tail)
            if m and mark in self.text():
                return int(m.group(1))
            time.sleep(0.1)
        raise RuntimeError("testpmd did not report its port statistics")

    def tables(self):
        """The memory tables DPDK received: one list of (guest physical
        address, size) per SET_MEM_TABLE, and whether DPDK found it
        unchanged (it then keeps its mappings)."""
        out = []
        for chunk in self.text().split("read message VHOST_USER_SET_MEM_TABLE")[1:]:
            chunk = chunk.split("read message VHOST_USER_")[0]
            regions = [(int(a, 16), int(s, 16)) for s, a in re.findall(
                r"guest memory region size: (0x[0-9a-f]+)\s*\n.*?"
                r"guest physical addr: (0x[0-9a-f]+)", chunk, re.S)]
            out.append((regions, "not changed" in chunk or
                        "reusing" in chunk))
        return out

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(self.proc, 5)
        self.out.close()


def ram_args(kind_kb, dimms):
    """-object/-device options: 1 GiB of guest RAM and `dimms` DIMMs, each a
    shared memfd of the same page size."""
    def memfd(oid, size):
        opts = f"memory-backend-memfd,id={oid},size={size},share=on"
        if kind_kb:
            opts += f",hugetlb=on,hugetlbsize={kind_kb << 10}"
        return ["-object", opts]
    args = memfd("mem", GUEST_MB << 20)
    for i in range(dimms):
        args += memfd(f"dimm{i}mem", DIMM_SIZE)
        args += ["-device", f"pc-dimm,id=dimm{i},memdev=dimm{i}mem"]
    return args


def qemu_args(qemu, cfg, kb, sock, workdir, dimms=0, extra=()):
    mopts = cfg["machine_type"] + ",memory-backend=mem" + cfg["opts"]
    return [qemu, "-machine", mopts, "-accel", "tcg",
            "-m", f"{GUEST_MB}M,slots={SLOTS},maxmem=4G",
            "-display", "none", "-nodefaults", "-serial", "none",
            "-chardev", f"socket,id=vhu,path={sock}",
            "-netdev", "vhost-user,id=net0,chardev=vhu",
            "-device", "virtio-net-pci,netdev=net0,disable-legacy=on,"
            f"romfile={PXE_ROM},bootindex=1"] + \
        ram_args(kb, dimms) + list(extra)


def dimm_capacity(qemu, cfg, kb, pmd, workdir):
    """The most DIMMs QEMU starts with next to the backend (0..SLOTS), and
    the error that refused one more."""
    best, refusal = -1, ""
    for n in range(SLOTS + 1):
        qmp_path = os.path.join(workdir, f"dimms{n}.qmp")
        err = os.path.join(workdir, f"dimms{n}.err")
        args = qemu_args(qemu, cfg, kb, pmd.sock, workdir, dimms=n,
                         extra=["-S", "-qmp",
                                f"unix:{qmp_path},server=on,wait=off"])
        with open(err, "wb") as errf:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                    stderr=errf)
        ok = False
        try:
            deadline = time.time() + 60
            while time.time() < deadline and proc.poll() is None:
                if os.path.exists(qmp_path):
                    try:
                        qmp = QMP(qmp_path, timeout=10)
                        qmp.cmd("query-status")
                        qmp.cmd("quit")
                        qmp.close()
                        ok = True
                    except (OSError, EOFError, RuntimeError):
                        pass
                    break
                time.sleep(0.05)
            proc.wait(timeout=30)
        finally:
            stop(proc, 5)
        if not ok:
            refusal = open(err, errors="replace").read().strip()
            break
        best = n
    return best, refusal


def wait_packets(pmd, qemu_proc, above, what):
    deadline = time.time() + PACKET_TIMEOUT
    while time.time() < deadline:
        n = pmd.rx_packets()
        if n > above:
            return n
        if qemu_proc.poll() is not None:
            raise RuntimeError(f"QEMU exited before {what}")
        time.sleep(0.5)
    raise RuntimeError(f"no packet from the guest {what} "
                       f"after {PACKET_TIMEOUT} s")


def reset_and_wait(pmd, qmp, qemu_proc, what):
    """Reset the guest; wait until the device is started again (a new
    memory table reaches the backend), then for packets after that."""
    tables = len(pmd.tables())
    qmp.cmd("system_reset")
    deadline = time.time() + PACKET_TIMEOUT
    while len(pmd.tables()) <= tables:
        if time.time() > deadline or qemu_proc.poll() is not None:
            raise RuntimeError(f"the device was not started again {what}")
        time.sleep(0.2)
    return wait_packets(pmd, qemu_proc, pmd.rx_packets(), what)
