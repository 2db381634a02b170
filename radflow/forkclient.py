"""The command a warm worker's flow run starts with: asks the worker's fork server
(:mod:`radflow.forkserver`) for a process that has Prefect and the flows imported already.

It runs as ``python -S -I forkclient.py SOCKET`` and imports nothing but the standard library,
so it starts in milliseconds. To the Prefect worker it is the flow run's process:

- its stdin, stdout and stderr become the run's (passed over the socket);
- its environment and working directory become the run's;
- a SIGTERM to it (how the worker cancels a run) is passed on to the run;
- it exits as the run does, with its code (or by its signal);
- if it is killed, the server kills the run.

Where no server answers (a worker started without one, or one that died), it becomes
``python -m prefect.engine`` itself, as a cold start: slower, never wrong.
"""

import json
import os
import signal
import socket
import struct
import sys
import time


def cold_start(module: str) -> None:
    """Become the plain engine process (the same environment, a fresh interpreter)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # (an ignored signal stays ignored over exec)
    os.execv(sys.executable, [sys.executable, "-m", module])


def connect(path: str) -> socket.socket | None:
    """The server's socket, or None. Connects by the name inside its folder: a home's full
    path may pass the 107 bytes that a socket address holds."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.getcwd()
    try:
        os.chdir(os.path.dirname(path) or ".")
        sock.connect(os.path.basename(path))
        return sock
    except OSError:
        sock.close()
        return None
    finally:
        os.chdir(here)


def read_line(sock: socket.socket, buffer: bytearray) -> bytes | None:
    """One newline-ended message from the server; None once it has gone."""
    while b"\n" not in buffer:
        try:
            chunk = sock.recv(4096)
        except InterruptedError:
            continue
        if not chunk:
            return None
        buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


def wait_gone(pid: int) -> None:
    """Wait until a process that is not ours has ended (the server went before telling us)."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(0.5)


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print("usage: forkclient.py SOCKET [MODULE]  (MODULE: prefect.engine)", file=sys.stderr)
        return 2
    module = sys.argv[2] if len(sys.argv) == 3 else "prefect.engine"
    sock = connect(sys.argv[1])
    if sock is None:
        cold_start(module)
    request = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(),
                          "module": module}).encode()
    # the group's SIGINT (a site going down) reaches the run itself: no second copy from here
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        socket.send_fds(sock, [struct.pack("!I", len(request)) + request], [0, 1, 2])
    except OSError:
        cold_start(module)
    buffer = bytearray()
    line = read_line(sock, buffer)
    if line is None or not line.startswith(b"pid "):
        sock.close()
        cold_start(module)
    pid = int(line.split()[1])

    def forward(signum: int, _frame: object) -> None:
        try:
            sock.sendall(f"signal {signum}\n".encode())
        except OSError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)
    line = read_line(sock, buffer)
    if line is None or not line.startswith(b"exit "):
        wait_gone(pid)
        return 1
    status = int(line.split()[1])
    if status < 0:  # ended by a signal: end by the same one, as the run's own process would
        if -status not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        time.sleep(1)
        return 128 - status
    return status


if __name__ == "__main__":
    sys.exit(main())
