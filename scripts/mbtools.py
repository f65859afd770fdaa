"""Small helpers shared by the harness's Python scripts."""

import csv
import json
import socket
import subprocess
import time


class QMP:
    """A QMP client on a UNIX socket (retries until QEMU listens)."""

    def __init__(self, path, timeout=30):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
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
