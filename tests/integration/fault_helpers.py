"""Shared helpers for the fault tests (test_faults_*.py).

The faults are the real ones, made to happen at a chosen point:

* SIGKILL at an exact system call of a running Dovecot process. strace
  attaches to the process and delivers SIGKILL when it enters the n-th
  matching call (`kill_at`), e.g. the fdatasync() of data.mdb that comes
  between an LMDB commit's page writes and its meta page, or the write
  to dovecot.index.log that follows the device state's rename. The
  killed call itself never runs. `delay_at` holds a call for a while
  instead, so that the test can change a file at that moment.
* A full file system: a small tmpfs mounted over a directory (`tmpfs`,
  always unmounted again) and filled to the last byte (`fill`).

strace is the only tool this needs besides Dovecot; tests that use it
call `require_strace()`, which skips them with the reason when strace is
missing (apt-get install strace).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import pytest

STRACE = shutil.which("strace")


def require_strace() -> str:
    if STRACE is None:
        pytest.skip("strace is not installed (apt-get install strace): the "
                    "fault is injected at an exact system call with it")
    return STRACE


# ------------------------------------------------------------ processes

def proc_state(pid: int) -> Optional[str]:
    """The state letter of /proc/<pid>/stat, None if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z", "X")


def wait_gone(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still running after {timeout}s")
        time.sleep(0.01)


def tracer_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _fd_links(pid: int) -> dict[str, str]:
    """Process `pid`'s descriptors and the paths they point to."""
    out = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            out[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def wait_read(pid: int, path: Path, size: int, timeout: float = 10) -> None:
    """Wait until process `pid` has read `size` bytes of `path` through a
    descriptor it holds open (its file position, from /proc). An open
    alone isn't enough for a test that changes the file after the read:
    the read may not have started yet."""
    deadline = time.monotonic() + timeout
    while True:
        for fd in [fd for fd, p in _fd_links(pid).items() if p == str(path)]:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    info = f.read()
            except OSError:
                continue
            pos = re.search(r"^pos:\s*(\d+)", info, re.M)
            if pos and int(pos.group(1)) >= size:
                return
        if not alive(pid):
            raise AssertionError(f"process {pid} exited before reading {path}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"process {pid} didn't read {size} bytes of {path} in {timeout}s")
        time.sleep(0.002)


# ------------------------------------------------------------ strace

class Strace:
    """strace attached to one process, injecting a fault.

    Started with the process running; `__init__` returns once the tracer
    is attached. `stop()` detaches (or collects strace after the tracee
    died) and is idempotent; use it as a context manager.
    """

    def __init__(self, pid: int, args: Sequence[str], out: Path):
        self.pid = pid
        self.out = out
        self.proc = subprocess.Popen(
            [require_strace(), "-qq", "-p", str(pid), "-o", str(out), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while tracer_of(pid) != self.proc.pid:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"strace -p {pid} exited {self.proc.returncode}: "
                    f"{self.proc.stderr.read().decode(errors='replace')}")
            if not alive(pid):
                self.stop()
                raise AssertionError(f"process {pid} ended before strace attached")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"strace didn't attach to {pid}")
            time.sleep(0.005)

    def trace(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def killed(self) -> bool:
        """Did the injected SIGKILL hit the process?"""
        return "+++ killed by SIGKILL +++" in self.trace()

    def wait(self, timeout: float = 30) -> None:
        """Wait until strace has exited (it does when its tracee dies)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"process {self.pid} wasn't killed within "
                                 f"{timeout}s; trace:\n{self.trace()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # strace detaches on SIGTERM
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> "Strace":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _filters(paths: Iterable[Path]) -> list[str]:
    out = []
    for p in paths:
        out += ["-P", str(p)]
    return out


def kill_at(pid: int, syscalls: Sequence[str], when: int, out: Path,
            paths: Iterable[Path] = ()) -> Strace:
    """SIGKILL process `pid` when it enters the `when`-th call of any of
    `syscalls` (counted together) that touches one of `paths` (any call,
    if no paths); the call doesn't run."""
    names = ",".join(syscalls)
    return Strace(pid, _filters(paths) + ["-e", f"trace={names}", "-e",
                                          f"inject={names}:signal=KILL:when={when}"],
                  out)


def delay_at(pid: int, syscall: str, usec: int, out: Path,
             paths: Iterable[Path] = (), when: int = 1) -> Strace:
    """Hold process `pid` for `usec` microseconds when it enters the
    `when`-th `syscall` that touches one of `paths`."""
    return Strace(pid, _filters(paths) + [
        "-e", f"trace={syscall}",
        "-e", f"inject={syscall}:delay_enter={usec}:when={when}"], out)


# ------------------------------------------------------------ file systems

@contextlib.contextmanager
def tmpfs(path: Path, size: str, uid: int, gid: int,
          mode: int = 0o700) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. "3m") over the directory `path`,
    owned by uid:gid; unmounted (lazily, in case a process still has a
    file open) when the block ends, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o",
                          f"size={size},mode={mode:o},uid={uid},gid={gid}",
                          "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"can't mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path, name: str = "filler", leave: int = 0) -> Path:
    """Write a file into `directory` until the file system is full, then
    give back `leave` bytes (rounded to pages). Returns the file."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(block) == 4096:
                    break
                block = b"\0" * 4096
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return path


# ------------------------------------------------------------ the log

def killed_lines(text: str, pids: Iterable[int]) -> list[str]:
    """The master's report of each of `pids` killed with signal 9."""
    out = []
    for pid in pids:
        out += [line for line in text.splitlines()
                if f"child {pid} killed with signal 9" in line]
    return out
