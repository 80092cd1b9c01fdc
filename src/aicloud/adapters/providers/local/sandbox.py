"""The sandbox every local workload runs in: bubblewrap for the filesystem, processes and
user, pasta (from passt) for the network.

What a workload gets, and why each piece is there:

- **Its own host uid** (``uid_base`` + n, one per workload, never root nor the server's uid):
  the supervisor drops to it with ``setpriv`` before anything of the workload runs, so even a
  kernel-level escape from the namespaces lands on an uid that owns nothing but its work dir.
- **Mount namespace** (bubblewrap): a new root holding ``/usr`` (read-only; the templates run
  on its python3), a copy of the templates (read-only), a few files of ``/etc`` (read-only;
  the passwd and group files are the workload's own), ``/tmp`` (its work dir's ``.tmp``), a
  minimal ``/dev`` (plus its own GPUs' device nodes; its ``/dev/shm`` is private), and its
  work dir at ``/workspace``: the only writable place (the root is remounted read-only). The
  platform's database, ``var/``, the source tree and other workloads' dirs are simply not
  there.
- **PID namespace** with a fresh ``/proc``: the server's processes (and their environ) do not
  exist for the workload. When the workload's main process ends, everything it left is killed.
- **IPC, UTS, cgroup namespaces**; no nested user namespaces (``--disable-userns``); no new
  privileges; every capability dropped.
- **Network namespace** created by ``pasta``: only a loopback interface (the tap device is
  left unconfigured, so nothing is routed out), and pasta forwards exactly one port in: the
  host's ``127.0.0.1:$PORT`` to the workload's ``127.0.0.1:$PORT``. ``-T none -U none`` turns
  off pasta's default forwarding of the namespace's loopback to the host's, so the platform's
  database (127.0.0.1:5432), API and internal ports are unreachable, and abstract unix sockets
  are per namespace too. We measured the alternative, uid-owner firewall rules in the host's
  namespace: they need global iptables state, leave abstract unix sockets shared and let a
  workload bind any host port; a namespace leaves nothing to forget. Workloads have no
  outbound network in this form.

Why pasta creates the namespace (``pasta -- bwrap ...``) instead of joining bubblewrap's:
bubblewrap nests a second user namespace, and pasta, which drops its capabilities first,
cannot join a network namespace owned by the outer one. pasta runs as the workload's uid; it
needs ``/dev/net/tun`` open to others (Debian's default, 0666; the install script sets it).

The web terminal enters the same namespaces with ``nsenter`` (as the workload's uid, with no
capabilities and no new privileges), so an interactive shell sees exactly what the workload
sees.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aicloud.adapters.providers.local import procfs

# The command runs through this inside the sandbox: it closes every inherited descriptor
# beyond stdio (pasta leaks its host-side sockets to its child), restores the default
# handling of the stop signals, starts in $HOME (/workspace; nsenter cannot choose a dir
# inside the mount namespace it enters) and reports a command that cannot start the way a
# shell does.
TRAMPOLINE = (
    "import os, signal, sys\n"
    "os.closerange(3, 1 << 20)\n"
    "os.chdir(os.environ.get('HOME', '/'))\n"
    "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
    "    signal.signal(s, signal.SIG_DFL)\n"
    "try:\n"
    "    os.execvp(sys.argv[1], sys.argv[1:])\n"
    "except OSError as exc:\n"
    "    print(f'[aicloud] cannot start {sys.argv[1]}: {exc}', file=sys.stderr, flush=True)\n"
    "    sys.exit(127)\n"
)
WORKSPACE = "/workspace"
BWRAP_ARGS_FILE = "bwrap.args"
# The supervisor puts the descriptor of the open BWRAP_ARGS_FILE in its place.
ARGS_FD_PLACEHOLDER = "{bwrap-args-fd}"
APPS_MOUNT = "/opt/aicloud/apps"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
TOOLS = ("bwrap", "pasta", "setpriv", "nsenter")
# Read-only from the host's /etc: what libc, TLS and the terminal need, nothing else.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "ca-certificates",
        "ca-certificates.conf", "nsswitch.conf", "hosts", "localtime", "timezone", "mime.types",
        "profile", "bash.bashrc", "inputrc", "terminfo", "host.conf", "gai.conf")
_NVIDIA_SHARED = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def sandbox_python() -> str | None:
    """The interpreter for the trampoline and the stdlib-only templates: the host's own
    python3 under /usr, which the sandbox mounts. Never the server's virtualenv (it lives in
    the source tree) nor a per-user installation (under /root, closed to the workload)."""
    return shutil.which("python3", path=SANDBOX_PATH)


@functools.cache
def host_problems() -> tuple[str, ...]:
    """Why this host cannot run the bubblewrap sandbox (empty when it can). Cheap: files and
    PATH only, cached per process."""
    problems = []
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        problems.append(f"missing {', '.join(missing)} (Debian: apt-get install bubblewrap "
                        "passt util-linux; `make install` runs deploy/install-sandbox.sh)")
    if os.geteuid() != 0:
        problems.append("the node agent must run as root to give each workload its own uid "
                        f"(it runs as uid {os.geteuid()})")
    with contextlib.suppress(OSError, ValueError):
        if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
            problems.append("user namespaces are disabled (user.max_user_namespaces = 0)")
    with contextlib.suppress(OSError, ValueError):
        if Path("/proc/sys/kernel/unprivileged_userns_clone").read_text().strip() == "0":
            problems.append("unprivileged user namespaces are disabled "
                            "(kernel.unprivileged_userns_clone = 0)")
    python = sandbox_python()
    if python is None or not os.path.realpath(python).startswith("/usr/"):
        problems.append("no python3 under /usr for the built-in templates (Debian: apt-get "
                        "install python3)")
    try:
        mode = os.stat("/dev/net/tun").st_mode
        if mode & 0o006 != 0o006:
            problems.append("/dev/net/tun is not open to other users (mode "
                            f"{stat.filemode(mode)}); chmod 0666 /dev/net/tun, as Debian does")
    except OSError:
        problems.append("/dev/net/tun is missing (pasta needs the tun driver)")
    return tuple(problems)


@dataclass(frozen=True)
class Bubblewrap:
    """Builds the command lines that run a workload in, and enter, its sandbox."""

    python: str
    apps_dir: Path

    def prepare(self, state_dir: Path, uid: int, workload_id: str) -> None:
        """What bwrap mounts from the workload's dir: its identity files and a copy of the
        templates (the source tree itself stays out of reach)."""
        self.identity_files(state_dir, uid, workload_id)
        tmp = state_dir / "work" / ".tmp"
        tmp.mkdir(exist_ok=True)
        os.chown(tmp, uid, uid)
        apps = state_dir / "apps"
        apps.mkdir(exist_ok=True)
        for script in self.apps_dir.glob("*.py"):
            shutil.copyfile(script, apps / script.name)

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if k != "PATH"}
        env["PATH"] = SANDBOX_PATH
        env["HOME"] = WORKSPACE
        return env

    def template(self, script: str) -> tuple[str, ...]:
        return (self.python, f"{APPS_MOUNT}/{script}")

    def identity_files(self, state_dir: Path, uid: int, workload_id: str) -> None:
        """passwd and group files naming the workload's uid (mounted over /etc's)."""
        (state_dir / "passwd").write_text(
            f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"workload:x:{uid}:{uid}:{workload_id}:{WORKSPACE}:/bin/bash\n"
            f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
        (state_dir / "group").write_text(
            f"root:x:0:\nworkload:x:{uid}:\nnogroup:x:65534:\n")

    def launch(self, argv: Sequence[str], *, state_dir: Path, uid: int, workload_id: str,
               port: int | None, gpus: Sequence[int]) -> list[str]:
        """setpriv (drop to the workload's uid) > pasta (network namespace, one port in) >
        bwrap (everything else) > the trampoline > the command."""
        pasta = [shutil.which("pasta") or "pasta", "--quiet", "--foreground",
                 "-t", f"127.0.0.1/{port}" if port else "none",
                 "-u", "none", "-T", "none", "-U", "none", "--"]
        bwrap, *options = self._bwrap(state_dir=state_dir, uid=uid, workload_id=workload_id,
                                      gpus=gpus)
        # bwrap's options name host paths; its init stays visible in the sandbox's /proc, so
        # they travel in a file the supervisor opens and hands down (bwrap --args FD), never
        # on a command line the workload can read.
        args_file = state_dir / BWRAP_ARGS_FILE
        fd = os.open(args_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(fd, "wb") as f:
            f.write(b"".join(o.encode() + b"\0" for o in options))
        return [*self._as_uid(uid), *pasta, bwrap, "--args", ARGS_FD_PLACEHOLDER,
                "--", self.python, "-I", "-S", "-c", TRAMPOLINE, *argv]

    @staticmethod
    def _as_uid(uid: int) -> list[str]:
        return [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}",
                "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"]

    def _bwrap(self, *, state_dir: Path, uid: int, workload_id: str,
               gpus: Sequence[int]) -> list[str]:
        args = [shutil.which("bwrap") or "bwrap",
                "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--disable-userns", "--die-with-parent",
                "--uid", str(uid), "--gid", str(uid), "--hostname", workload_id,
                "--cap-drop", "ALL",
                "--ro-bind", "/usr", "/usr"]
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / top
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), f"/{top}"]
            elif host.is_dir():
                args += ["--ro-bind", str(host), f"/{top}"]
        for name in _ETC:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--ro-bind", str(state_dir / "passwd"), "/etc/passwd",
                 "--ro-bind", str(state_dir / "group"), "/etc/group"]
        args += ["--ro-bind", str(state_dir / "apps"), APPS_MOUNT,
                 "--proc", "/proc", "--dev", "/dev",
                 "--bind", str(state_dir / "work"), WORKSPACE,
                 # /tmp is the work dir's too: disk it already owns, not host memory.
                 "--bind", str(state_dir / "work" / ".tmp"), "/tmp",
                 "--chdir", WORKSPACE]
        for device in [*_NVIDIA_SHARED, *(f"nvidia{i}" for i in gpus)]:
            args += ["--dev-bind-try", f"/dev/{device}", f"/dev/{device}"]
        # The new root is a tmpfs bwrap built; nothing may be added to it afterwards.
        return [*args, "--remount-ro", "/"]

    def enter(self, argv: Sequence[str], *, sandbox_pid: int, uid: int) -> list[str]:
        """Run ``argv`` in the namespaces of the sandboxed process ``sandbox_pid`` (see
        :func:`sandbox_main`): its root, /workspace, its uid, no capabilities."""
        return [shutil.which("nsenter") or "nsenter", f"--target={sandbox_pid}",
                "--user", "--mount", "--pid", "--net", "--ipc", "--uts",
                f"--setuid={uid}", f"--setgid={uid}", "--",
                "/usr/bin/setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
                "--", self.python, "-I", "-S", "-c", TRAMPOLINE, *argv]


def closed_ancestors(root: Path) -> list[str]:
    """Directories on the way to ``root`` that other users cannot pass through. bwrap runs
    as the workload's uid and mounts the workload's files by path, so it must walk there."""
    closed = []
    for directory in [*reversed(root.parents), root]:
        with contextlib.suppress(OSError):
            mode = directory.stat().st_mode
            if not mode & stat.S_IXOTH:
                closed.append(f"{directory} ({stat.filemode(mode)})")
    return closed


def sandbox_main(pgid: int, not_before_ticks: int) -> int | None:
    """Host pid of the workload's main process (the one its sandbox's init started), in the
    workload's process group; None when the sandbox is not running. Its namespaces are the
    workload's: the init's user namespace is bwrap's outer one, where the workload's uid is
    not mapped. pasta makes a PID namespace of its own around bwrap's, so the init is the
    innermost one."""
    init, depth = None, 0
    for pid in procfs.group_members(pgid, not_before_ticks):
        levels = procfs.pid_levels(pid)
        if len(levels) > max(1, depth) and levels[-1] == 1:
            init, depth = pid, len(levels)
    if init is None:
        return None
    children = procfs.children(init)
    return children[0] if children else None
