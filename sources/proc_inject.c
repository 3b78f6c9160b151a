/* Make a running process create a userfaultfd by injecting the system call
 * with ptrace: a userfaultfd acts on the mm of its creator, so a program we
 * did not start under the preload has to create it itself.
 *
 * The target is stopped with PTRACE_SEIZE + PTRACE_INTERRUPT, its registers
 * saved, the instruction pointer moved to an existing `syscall` instruction
 * (in the vDSO or libc, never written to: other threads may be running that
 * code), and one PTRACE_SINGLESTEP executes it. orig_rax = -1 keeps the
 * kernel from restarting whatever system call the thread was blocked in;
 * restoring the saved registers (orig_rax included) before detaching lets
 * the kernel restart that call as if nothing happened. */
#include "sources/proc_int.h"
#include "sources/uffd_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <sys/ptrace.h>
#include <sys/user.h>

#define WAIT_LIMIT_NS 5000000000ull

/* Address of the bytes 0f 05 in an executable mapping of pid, 0 if none. */
static uint64_t find_syscall_insn(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "re");
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    int mem = open(path, O_RDONLY | O_CLOEXEC);
    uint64_t found = 0;
    char *line = NULL;
    size_t cap = 0;
    /* Two passes: the vDSO is small and always there; then anything else. */
    for (int pass = 0; f && mem >= 0 && pass < 2 && !found; pass++) {
        rewind(f);
        while (!found && getline(&line, &cap, f) > 0) {
            unsigned long long lo, hi;
            char perms[8];
            if (sscanf(line, "%llx-%llx %7s", &lo, &hi, perms) != 3 || perms[2] != 'x' || perms[0] != 'r')
                continue;
            bool vdso = strstr(line, "[vdso]") != NULL;
            if ((pass == 0) != vdso || strstr(line, "[vsyscall]"))
                continue;
            size_t len = hi - lo > (8u << 20) ? (8u << 20) : hi - lo;
            uint8_t *buf = malloc(len);
            ssize_t got = buf ? pread(mem, buf, len, (off_t)lo) : -1;
            for (ssize_t i = 0; i + 1 < got; i++)
                if (buf[i] == 0x0f && buf[i + 1] == 0x05) {
                    found = lo + (uint64_t)i;
                    break;
                }
            free(buf);
        }
    }
    free(line);
    if (f)
        fclose(f);
    if (mem >= 0)
        close(mem);
    return found;
}

/* Wait for the next ptrace stop of pid. Returns the status, or -1 (process
 * gone) / -2 (no stop within the limit). */
static int wait_stop(int pid)
{
    uint64_t deadline = ms_now_ns() + WAIT_LIMIT_NS;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, __WALL | WNOHANG);
        if (r == pid)
            return WIFSTOPPED(st) ? st : -1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (ms_now_ns() > deadline)
            return -2;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

typedef struct injector {
    int pid;
    uint64_t gadget;
    struct user_regs_struct saved;
    int pending_sig; /* a signal we intercepted, delivered again at detach */
} injector;

/* Run one system call in the target; returns its result (-errno on
 * failure) in *ret. */
static int remote_syscall(injector *in, long nr, long a1, long a2, long a3, long *ret)
{
    struct user_regs_struct r = in->saved;
    r.rip = in->gadget;
    r.rax = (unsigned long long)nr;
    r.orig_rax = (unsigned long long)-1;
    r.rdi = (unsigned long long)a1;
    r.rsi = (unsigned long long)a2;
    r.rdx = (unsigned long long)a3;
    if (ptrace(PTRACE_SETREGS, in->pid, 0, &r) < 0)
        return ms_error(MS_ERR_IO, "process %d: PTRACE_SETREGS: %s", in->pid, strerror(errno));
    for (int tries = 0; tries < 64; tries++) {
        if (ptrace(PTRACE_SINGLESTEP, in->pid, 0, 0) < 0)
            return ms_error(MS_ERR_IO, "process %d: PTRACE_SINGLESTEP: %s", in->pid, strerror(errno));
        int st = wait_stop(in->pid);
        if (st == -1)
            return ms_error(MS_ERR_CLOSED, "process %d exited during injection", in->pid);
        if (st == -2)
            return ms_error(MS_ERR_TIMEOUT, "process %d: no trap after single step", in->pid);
        int sig = WSTOPSIG(st), event = st >> 16;
        if (ptrace(PTRACE_GETREGS, in->pid, 0, &r) < 0)
            return ms_error(MS_ERR_IO, "process %d: PTRACE_GETREGS: %s", in->pid, strerror(errno));
        /* A signal may arrive around the step, or the interrupt stop be
         * reported late: keep such a signal for the detach. */
        if (event == 0 && sig != SIGTRAP)
            in->pending_sig = sig;
        if (r.rip == in->gadget + 2) {
            *ret = (long)r.rax;
            return MS_OK;
        }
        if (r.rip != in->gadget)
            return ms_error(MS_ERR_IO, "process %d: unexpected stop at 0x%llx during injection", in->pid,
                            (unsigned long long)r.rip);
    }
    return ms_error(MS_ERR_TIMEOUT, "process %d: the injected system call never completed", in->pid);
}

static int attach_stop(injector *in)
{
    if (ptrace(PTRACE_SEIZE, in->pid, 0, 0) < 0)
        return ms_error(errno == ESRCH ? MS_ERR_CLOSED : MS_ERR_IO,
                        "process %d: PTRACE_SEIZE: %s (already traced, or no ptrace rights?)", in->pid,
                        strerror(errno));
    if (ptrace(PTRACE_INTERRUPT, in->pid, 0, 0) < 0) {
        int rc = ms_error(MS_ERR_IO, "process %d: PTRACE_INTERRUPT: %s", in->pid, strerror(errno));
        ptrace(PTRACE_DETACH, in->pid, 0, 0);
        return rc;
    }
    int st = wait_stop(in->pid);
    if (st < 0) {
        ptrace(PTRACE_DETACH, in->pid, 0, 0);
        return st == -1 ? ms_error(MS_ERR_CLOSED, "process %d exited", in->pid)
                        : ms_error(MS_ERR_TIMEOUT, "process %d did not stop for ptrace", in->pid);
    }
    if ((st >> 16) == 0 && WSTOPSIG(st) != SIGTRAP)
        in->pending_sig = WSTOPSIG(st);
    if (ptrace(PTRACE_GETREGS, in->pid, 0, &in->saved) < 0) {
        int rc = ms_error(MS_ERR_IO, "process %d: PTRACE_GETREGS: %s", in->pid, strerror(errno));
        ptrace(PTRACE_DETACH, in->pid, 0, 0);
        return rc;
    }
    return MS_OK;
}

static int create_remote_uffd(injector *in, long *remote)
{
    int rc = remote_syscall(in, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK, 0, 0, remote);
    if (!rc && *remote == -EPERM)
        rc = remote_syscall(in, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY, 0, 0, remote);
    if (!rc && *remote < 0)
        rc = ms_error(MS_ERR_UNSUPPORTED, "process %d: userfaultfd() failed there: %s", in->pid,
                      strerror((int)-*remote));
    return rc;
}

int ms_proc_inject_uffd(int pid, int pidfd, int *our_fd)
{
    *our_fd = -1;
    injector in = {.pid = pid};
    in.gadget = find_syscall_insn(pid);
    if (!in.gadget && ms_pidfd_exited(pidfd))
        return ms_error(MS_ERR_CLOSED, "process %d exited", pid);
    if (!in.gadget)
        return ms_error(MS_ERR_UNSUPPORTED, "process %d: no syscall instruction found to inject through", pid);
    int rc = attach_stop(&in);
    if (rc)
        return rc;
    long remote = -1, closed;
    rc = create_remote_uffd(&in, &remote);
    if (!rc) {
        *our_fd = ms_pidfd_getfd(pidfd, (int)remote);
        if (*our_fd < 0)
            rc = ms_error(MS_ERR_IO, "process %d: pidfd_getfd: %s", pid, strerror(errno));
        /* Our copy keeps the context alive; the target's would only confuse it. */
        int crc = remote_syscall(&in, SYS_close, remote, 0, 0, &closed);
        if (!rc)
            rc = crc;
    }
    /* Put everything back whatever happened above. */
    if (ptrace(PTRACE_SETREGS, pid, 0, &in.saved) < 0 && !rc)
        rc = ms_error(MS_ERR_IO, "process %d: restoring registers: %s", pid, strerror(errno));
    if (ptrace(PTRACE_DETACH, pid, 0, (void *)(long)in.pending_sig) < 0 && !rc && errno != ESRCH)
        rc = ms_error(MS_ERR_IO, "process %d: PTRACE_DETACH: %s", pid, strerror(errno));
    if (rc && *our_fd >= 0) {
        close(*our_fd);
        *our_fd = -1;
    }
    return rc;
}

#else

int ms_proc_inject_uffd(int pid, int pidfd, int *our_fd)
{
    (void)pidfd;
    *our_fd = -1;
    return ms_error(MS_ERR_UNSUPPORTED,
                    "process %d: attaching to a running process needs system call injection, "
                    "implemented for x86-64 only; start the workload with spawn instead",
                    pid);
}

#endif
