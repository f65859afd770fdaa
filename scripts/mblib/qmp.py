"""Talking to QEMU: QMP and qtest connections on UNIX sockets, waiting
for a migration or a running guest, and stopping processes.
"""

import json
import socket
import subprocess
import time


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
