/* libmigstream-uffd.so: LD_PRELOAD'ed into a workload started by
 * ms_process_source_spawn(). A userfaultfd acts on the mm of the process
 * that created it, so the workload must create its own: this constructor
 * does that (and UFFDIO_API with asynchronous write-protect), keeps the fd
 * open, and tells the tracker its number on the pipe named by
 * $MIGSTREAM_UFFD_REPORT_FD; the tracker takes it with pidfd_getfd() and
 * does all registration itself. A fork() child gets a fresh one the same
 * way (its mm is new). Without the variable the library does nothing. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sources/uffd_sys.h"

static int g_uffd = -1;
static int g_report = -1;

static int new_uffd(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    /* Without CAP_SYS_PTRACE and with vm.unprivileged_userfaultfd=0 only
     * user-mode faults may be handled; asynchronous WP never delivers a
     * fault to user space, so that restriction costs nothing here. */
    if (fd < 0 && errno == EPERM)
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0) {
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
            close(dev);
        }
    }
    return fd;
}

/* UFFDIO_API succeeds once per fd, so the supported set is probed on a
 * throwaway one. Returns the ready fd or -errno. */
static int setup_uffd(uint64_t *features)
{
    int probe = new_uffd();
    if (probe < 0)
        return -errno;
    struct uffdio_api api = {.api = UFFD_API, .features = 0};
    int rc = ioctl(probe, UFFDIO_API, &api);
    int err = errno;
    close(probe);
    if (rc < 0)
        return -err;
    if ((api.features & MS_UFFD_NEEDED) != MS_UFFD_NEEDED)
        return -EOPNOTSUPP;
    uint64_t want = MS_UFFD_NEEDED | (api.features & MS_UFFD_OPTIONAL);
    int fd = new_uffd();
    if (fd < 0)
        return -errno;
    api = (struct uffdio_api){.api = UFFD_API, .features = want};
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        err = errno;
        close(fd);
        return -err;
    }
    *features = want;
    return fd;
}

static void report(int fd_or_err, uint64_t features)
{
    struct ms_uffd_report r = {
        .magic = MS_UFFD_REPORT_MAGIC,
        .pid = (int32_t)getpid(),
        .fd = fd_or_err >= 0 ? fd_or_err : -1,
        .err = fd_or_err >= 0 ? 0 : -fd_or_err,
        .features = features,
    };
    /* Non-blocking pipe: if the tracker lags and the pipe is full the
     * report is lost and the tracker falls back to injecting the call. */
    ssize_t n = write(g_report, &r, sizeof r);
    (void)n;
}

/* Runs in the child of fork(): only async-signal-safe calls. */
static void after_fork_child(void)
{
    int saved = errno;
    if (g_uffd >= 0)
        close(g_uffd); /* the parent's, useless for this mm */
    uint64_t features = 0;
    g_uffd = setup_uffd(&features);
    report(g_uffd, features);
    if (g_uffd < 0)
        g_uffd = -1;
    errno = saved;
}

static int report_fd_from_env(void)
{
    const char *s = getenv(MS_UFFD_REPORT_ENV);
    if (!s || !*s)
        return -1;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v > 1 << 20)
        return -1;
    struct stat st;
    if (fstat((int)v, &st) < 0 || !S_ISFIFO(st.st_mode))
        return -1;
    return (int)v;
}

__attribute__((constructor)) static void ms_uffd_preload_init(void)
{
    int saved = errno;
    g_report = report_fd_from_env();
    if (g_report >= 0) {
        uint64_t features = 0;
        g_uffd = setup_uffd(&features);
        report(g_uffd, features);
        if (g_uffd < 0)
            g_uffd = -1;
        pthread_atfork(NULL, NULL, after_fork_child);
    }
    errno = saved;
}
