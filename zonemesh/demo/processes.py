"""Child processes of a demo or end-to-end run: `zonemesh ...` subprocesses that never outlive us.

Every process gets a log file in the run directory and its own session (so a Ctrl-C in the
terminal reaches only the parent, which then stops everything in order). Three layers make
sure nothing is left behind:

- `ProcessGroup` is a context manager: leaving it (normally, on an exception, or on SIGTERM,
  which it turns into `SystemExit`) stops every child: SIGTERM, then SIGKILL of the child's
  whole process group after a timeout (a `zonemesh dp run` shares its group with its Envoy).
- Each child is started through `zonemesh.dp.envoy.die_with_parent`, so on Linux the kernel
  kills it if the parent dies without cleaning up (SIGKILL, crash); a `zonemesh dp run`
  takes its Envoy with it the same way. The kernel ties that to the *thread* that started
  the child: start children from a thread that lives as long as they do.
- `atexit` stops whatever is still running when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx

from zonemesh.dp.envoy import die_with_parent

ZONEMESH = str(Path(sys.executable).parent / "zonemesh")
STOP_TIMEOUT_S = 10.0


def _peek_exit(pid: int, timeout: float = 0.0) -> int | None:
    """The exit code of child `pid` (negative: the signal that killed it), waiting up to
    `timeout`; None while it runs. It does NOT reap (WNOWAIT): until reaped, the zombie keeps
    its pid, and so its process-group number, from being reused by an unrelated process."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return -1  # reaped behind our back: gone, code unknown
        if info is not None:
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


class ProcessError(RuntimeError):
    """A child exited early or did not become ready; the message ends with its log's tail."""


def zonemesh_command() -> list[str]:
    """The console script next to this interpreter, else `python -m zonemesh`."""
    if os.access(ZONEMESH, os.X_OK):
        return [ZONEMESH]
    return [sys.executable, "-m", "zonemesh"]


def free_port(address: str = "127.0.0.1", taken: set[tuple[str, int]] | None = None) -> int:
    """A port the kernel says is free on `address` (not one of `taken`, which it joins)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
            port = int(s.getsockname()[1])
        if taken is None:
            return port
        if (address, port) not in taken:
            taken.add((address, port))
            return port
    raise ProcessError(f"no free port on {address}")


def port_is_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


class ManagedProcess:
    """One `zonemesh` subprocess that can be started again after it was stopped."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        *,
        prefix: Sequence[str] = (),
        program: Sequence[str] | None = None,
    ):
        self.name = name
        self.args = list(args)
        self.prefix = list(prefix)  # e.g. `ip netns exec NS`: where the program runs
        self.program = list(program) if program is not None else None  # default: zonemesh
        self.log_path = log_path
        self.env = dict(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.returncode is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has exited (reaped or not), else None."""
        if self.proc is None:
            return None
        if self.proc.returncode is not None:
            return self.proc.returncode
        return _peek_exit(self.proc.pid)

    def start(self) -> None:
        if self.running:
            raise ProcessError(f"{self.name} is already running")
        self.starts += 1
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%H:%M:%S")
            program = self.program if self.program is not None else zonemesh_command()
            shown = " ".join([*self.prefix, *(self.program or ["zonemesh"]), *self.args])
            log.write(f"----- {stamp} start {self.starts}: {shown}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                die_with_parent([*self.prefix, *program, *self.args]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # own process group: Ctrl-C reaches only the parent
            )

    def terminate(self) -> None:
        """SIGTERM, without waiting (see `wait_stopped`)."""
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Wait for the exit; SIGKILL the whole process group if it takes longer than
        `timeout`. The group is killed also after a clean exit, for any straggler, but
        before the child is reaped: only while its zombie holds the pid can the group
        number not have been reused by an unrelated process."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            _peek_exit(proc.pid, max(timeout, 0.0))  # the exit, without reaping it
            self._kill_group()  # the child itself if it overstayed, else any straggler
        proc.wait()
        return proc.returncode

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        self.terminate()
        return self.wait_stopped(timeout)

    def kill(self, wait: bool = True) -> None:
        """SIGKILL at once, the whole process group; `wait=False` leaves the reaping to a
        later `kill()` or `wait_stopped()` (to kill several processes at the same moment)."""
        if self.proc is not None:
            self._kill_group()
            if wait:
                self.proc.wait()

    def _kill_group(self) -> None:
        """Never after the child was reaped (`returncode` set): its number may be reused."""
        assert self.proc is not None
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.returncode
        if code is not None:
            raise ProcessError(
                f"{self.name} exited with code {code} (log {self.log_path}):\n{self.log_tail()}"
            )


class ProcessGroup:
    """Every child of one run; `with ProcessGroup(run_dir) as group:` stops them all on exit."""

    def __init__(self, run_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("KUMA_")}
        self.env = {**base, **(env or {})}
        self.procs: dict[str, ManagedProcess] = {}
        self._lock = threading.Lock()
        self._previous_handler: Any = None
        self._handler_installed = False
        atexit.register(self.stop_all)

    # --- lifecycle ------------------------------------------------------------------------

    def add(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        prefix: Sequence[str] = (),
        program: Sequence[str] | None = None,
    ) -> ManagedProcess:
        """Register `zonemesh <args>` (or `program <args>`), run behind `prefix` (such as
        `ip netns exec NS`), under `name`, logging to `<run_dir>/<name>.log`."""
        if name in self.procs:
            raise ProcessError(f"a process named {name} already exists")
        proc = ManagedProcess(
            name,
            args,
            self.run_dir / f"{name}.log",
            {**self.env, **(env or {})},
            prefix=prefix,
            program=program,
        )
        self.procs[name] = proc
        return proc

    def start(self, name: str) -> ManagedProcess:
        proc = self.procs[name]
        with self._lock:
            proc.start()
        return proc

    def spawn(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        """`add` and `start` in one."""
        self.add(name, args, env)
        return self.start(name)

    def __getitem__(self, name: str) -> ManagedProcess:
        return self.procs[name]

    def stop(self, *names: str, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the named processes together, then wait (SIGKILL after `timeout`)."""
        procs = [self.procs[n] for n in names]
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.wait_stopped(deadline - time.monotonic())

    def kill(self, *names: str) -> None:
        """SIGKILL the named processes' groups one right after the other, then reap them:
        what a lost machine or region does to them (nothing cleans up, none outlives
        another long enough to notice)."""
        procs = [self.procs[n] for n in names]
        for proc in procs:
            proc.kill(wait=False)
        for proc in procs:
            proc.kill()

    def stop_all(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every child that ever started; safe to call more than once."""
        with self._lock:
            started = [name for name, proc in self.procs.items() if proc.proc is not None]
            self.stop(*reversed(started), timeout=timeout)

    def running(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.running]

    def pids(self) -> list[int]:
        """Every live process of every child's group (children and their Envoys)."""
        groups = {p.pid for p in self.procs.values() if p.pid is not None}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            state, pgid = fields[0], int(fields[2])
            if pgid in groups and state != "Z":
                found.append(int(entry.name))
        return sorted(found)

    def __enter__(self) -> ProcessGroup:
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._handler_installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._handler_installed:
                # A second SIGTERM while cleaning up must not cut the cleanup short.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.stop_all()
        finally:
            if self._handler_installed:
                signal.signal(signal.SIGTERM, self._previous_handler)
                self._handler_installed = False
            atexit.unregister(self.stop_all)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    # --- readiness --------------------------------------------------------------------------

    def wait_until(
        self,
        what: str,
        predicate: Callable[[], Any],
        *,
        timeout: float = 30.0,
        interval: float = 0.1,
        watch: Sequence[str] = (),
    ) -> Any:
        """Poll `predicate` until it returns something truthy (returned); fail early if a
        watched process exits, and with the watched processes' logs on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for name in watch:
                self.procs[name].check_alive()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {n} ({self.procs[n].log_path}):\n{self.procs[n].log_tail()}"
                    for n in watch
                )
                raise ProcessError(f"{what}: not within {timeout:g}s\n{logs}")
            time.sleep(interval)

    def wait_http(
        self,
        name: str,
        url: str,
        *,
        timeout: float = 30.0,
        accept: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        """Until GET `url` answers 200 (or `accept(response)`), while `name` is alive."""
        check = accept or (lambda r: r.status_code == 200)

        def answered() -> bool:
            try:
                return check(httpx.get(url, timeout=2.0))
            except httpx.HTTPError:
                return False

        self.wait_until(f"{name}: {url}", answered, timeout=timeout, watch=[name])


@contextlib.contextmanager
def process_group(run_dir: Path) -> Iterator[ProcessGroup]:
    with ProcessGroup(run_dir) as group:
        yield group
