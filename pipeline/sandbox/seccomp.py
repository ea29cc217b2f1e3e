"""The seccomp layer (optional, pyseccomp over libseccomp2): `DENIED_SYSCALLS` fail with EPERM for x86-64,
i386 and x32; `clone` with namespace flags fails with EPERM and `clone3` with ENOSYS (libc falls back
to `clone`, whose flags the filter can inspect). The program is passed to bwrap with `--seccomp FD`, so
it applies to the command only, after bwrap has set up the namespaces.
"""

from __future__ import annotations

import errno
import os

DENIED_SYSCALLS: tuple[str, ...] = (
    # required by the issue
    "ptrace", "mount", "umount2", "unshare", "setns", "keyctl", "bpf", "perf_event_open", "add_key",
    "request_key", "init_module", "finit_module", "kexec_load", "reboot", "swapon", "pivot_root", "chroot",
    # same families: other mount/kernel/clock/accounting entry points and cross-process memory access
    "umount", "swapoff", "delete_module", "kexec_file_load", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "process_vm_readv", "process_vm_writev", "kcmp", "userfaultfd",
    "open_by_handle_at", "acct", "quotactl", "settimeofday", "clock_settime", "clock_adjtime", "syslog",
    "vhangup", "lookup_dcookie", "iopl", "ioperm", "io_uring_setup", "io_uring_enter", "io_uring_register",
)
_CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                          0x40000000, 0x00000080)  # NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET NEWTIME


def build_seccomp_filter() -> bytes:
    """The BPF program for `bwrap --seccomp`; raises ImportError/OSError when pyseccomp/libseccomp fail."""
    import pyseccomp as seccomp  # optional layer: imported lazily so its absence only disables seccomp

    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    if seccomp.system_arch() == seccomp.Arch.X86_64:
        for arch in (seccomp.Arch.X86, seccomp.Arch.X32):  # no bypass through the 32-bit syscall ABIs
            if not flt.exist_arch(arch):
                flt.add_arch(arch)
    eperm = seccomp.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(eperm, name)
        except OSError:  # unknown on this architecture
            continue
    for flag in _CLONE_NAMESPACE_FLAGS:
        flt.add_rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    try:
        flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags live in memory the filter cannot read
    except OSError:
        pass
    fd = os.memfd_create("seccomp-export", os.MFD_CLOEXEC)
    try:
        flt.export_bpf(_Fileno(fd))
        os.lseek(fd, 0, os.SEEK_SET)
        return _read_all(fd)
    finally:
        os.close(fd)


class _Fileno:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)
