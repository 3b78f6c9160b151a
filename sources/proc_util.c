/* /proc parsing and pidfd helpers for the process source. */
#include "sources/proc_int.h"
#include "sources/uffd_sys.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int ms_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
int ms_pidfd_getfd(int pidfd, int fd) { return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0); }
int ms_pidfd_signal(int pidfd, int sig) { return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0); }

bool ms_pidfd_exited(int pidfd)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

int ms_proc_uffd_api(int fd, uint64_t *features)
{
    /* Probe what the kernel offers on a throwaway fd: UFFDIO_API can be
     * done only once per fd. */
    int probe = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    uint64_t offered = MS_UFFD_NEEDED;
    if (probe >= 0) {
        struct uffdio_api api = {.api = UFFD_API, .features = 0};
        if (ioctl(probe, UFFDIO_API, &api) == 0)
            offered = api.features;
        close(probe);
    }
    if ((offered & MS_UFFD_NEEDED) != MS_UFFD_NEEDED)
        return ms_error(MS_ERR_UNSUPPORTED,
                        "this kernel's userfaultfd lacks asynchronous write-protect (features 0x%llx; needs Linux >= 6.7)",
                        (unsigned long long)offered);
    struct uffdio_api api = {.api = UFFD_API, .features = MS_UFFD_NEEDED | (offered & MS_UFFD_OPTIONAL)};
    if (ioctl(fd, UFFDIO_API, &api) < 0)
        return ms_error(MS_ERR_IO, "UFFDIO_API: %s", strerror(errno));
    *features = MS_UFFD_NEEDED | (offered & MS_UFFD_OPTIONAL);
    return MS_OK;
}

/* Bracketed names that are ordinary anonymous memory. */
static bool anon_bracket(const char *path)
{
    return !strcmp(path, "[heap]") || !strncmp(path, "[stack", 6) || !strncmp(path, "[anon:", 6) ||
           !strncmp(path, "[anon_shmem:", 12);
}

static bool shmem_path(const char *path)
{
    static const char *const prefixes[] = {"/dev/zero", "/SYSV", "/memfd:", "/dev/shm/", "/anon_hugepage",
                                           "[anon_shmem:", "/dev/hugepages/"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (!strncmp(path, prefixes[i], strlen(prefixes[i])))
            return true;
    return false;
}

/* Decide whether a mapping is selected; fills the object key. */
static bool select_vma(const char *perms, const char *path, uint64_t dev, uint64_t ino, uint32_t flags,
                       bool filtered, ms_vma *v)
{
    if (perms[1] != 'w')
        return false;
    bool shared = perms[3] == 's';
    bool anon = !*path || anon_bracket(path) || !strncmp(path, "/dev/zero", 9) || !strncmp(path, "/anon_hugepage", 14);
    if (*path == '[' && !anon_bracket(path))
        return false; /* [vvar], [vdso], [vsyscall], [uprobes] */
    if (shared) {
        if (!filtered && !shmem_path(path) && !(anon && *path))
            return false; /* a shared file on disk is storage, not memory */
        v->shared = true;
        v->obj_hi = dev;
        v->obj_lo = ino;
        return true;
    }
    if (!anon && !filtered && !(flags & MS_PROC_PRIVATE_FILE))
        return false;
    v->shared = false;
    return true;
}

static int add_vma(ms_vma **arr, size_t *n, size_t *cap, const ms_vma *v)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        ms_vma *na = realloc(*arr, nc * sizeof *na);
        if (!na)
            return ms_error(MS_ERR_NOMEM, "maps: out of memory");
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = *v;
    return MS_OK;
}

/* Add v clipped to the filter ranges (or whole without a filter). */
static int add_filtered(ms_vma **arr, size_t *n, size_t *cap, const ms_vma *v, const ms_addr_range *filter,
                        size_t nfilter)
{
    if (!filter)
        return add_vma(arr, n, cap, v);
    for (size_t i = 0; i < nfilter; i++) {
        uint64_t a = v->start > filter[i].start ? v->start : filter[i].start;
        uint64_t b = v->end < filter[i].end ? v->end : filter[i].end;
        if (a >= b)
            continue;
        ms_vma part = *v;
        part.start = a;
        part.end = b;
        part.pgoff = v->pgoff + ((a - v->start) >> MS_PAGE_SHIFT);
        int rc = add_vma(arr, n, cap, &part);
        if (rc)
            return rc;
    }
    return MS_OK;
}

static int vma_cmp(const void *a, const void *b)
{
    const ms_vma *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

int ms_proc_read_maps(int pid, uint32_t flags, uint64_t serial, const ms_addr_range *filter, size_t nfilter,
                      ms_vma **out, size_t *n)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return errno == ENOENT || errno == ESRCH ? ms_error(MS_ERR_CLOSED, "process %d is gone", pid)
                                                 : ms_error(MS_ERR_IO, "%s: %s", path, strerror(errno));
    ms_vma *arr = NULL;
    size_t cnt = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    int rc = MS_OK;
    while (!rc && getline(&line, &lcap, f) > 0) {
        unsigned long long lo, hi, off, ino;
        unsigned maj, min;
        char perms[8];
        int pos = 0;
        if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu %n", &lo, &hi, perms, &off, &maj, &min, &ino, &pos) < 7)
            continue;
        char *p = line + pos;
        p[strcspn(p, "\n")] = 0;
        ms_vma v = {.start = lo, .end = hi, .obj_hi = MS_OBJ_PRIVATE, .obj_lo = serial, .pgoff = lo >> MS_PAGE_SHIFT};
        if (!select_vma(perms, p, ((uint64_t)maj << 32) | min, ino, flags, filter != NULL, &v))
            continue;
        if (v.shared)
            v.pgoff = off >> MS_PAGE_SHIFT;
        rc = add_filtered(&arr, &cnt, &cap, &v, filter, nfilter);
    }
    if (!rc && ferror(f))
        rc = ms_error(MS_ERR_IO, "%s: read error", path);
    free(line);
    fclose(f);
    if (rc) {
        free(arr);
        return rc;
    }
    /* A zombie or exiting process has an empty map. */
    if (cnt == 0 && access(path, F_OK) < 0) {
        free(arr);
        return ms_error(MS_ERR_CLOSED, "process %d is gone", pid);
    }
    if (cnt > 1)
        qsort(arr, cnt, sizeof *arr, vma_cmp);
    *out = arr;
    *n = cnt;
    return MS_OK;
}

/* State letter and parent of a task from its stat file ("pid (comm) S ppid");
 * comm may contain spaces and parentheses, so parse after the last ')'. */
static int read_stat(const char *path, char *state, int *ppid)
{
    char buf[512];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0)
        return -1;
    buf[len] = 0;
    char *rp = strrchr(buf, ')');
    if (!rp || sscanf(rp + 1, " %c %d", state, ppid) != 2)
        return -1;
    return 0;
}

int ms_proc_descendants(int root, int **out, size_t *n)
{
    DIR *d = opendir("/proc");
    if (!d)
        return ms_error(MS_ERR_IO, "/proc: %s", strerror(errno));
    size_t cnt = 0, cap = 256;
    int(*pairs)[2] = malloc(cap * sizeof *pairs);
    int rc = pairs ? MS_OK : ms_error(MS_ERR_NOMEM, "process list");
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char path[300], st;
        int ppid;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        if (read_stat(path, &st, &ppid) < 0)
            continue;
        if (cnt == cap) {
            cap *= 2;
            void *np = realloc(pairs, cap * sizeof *pairs);
            if (!np) {
                rc = ms_error(MS_ERR_NOMEM, "process list");
                break;
            }
            pairs = np;
        }
        pairs[cnt][0] = atoi(e->d_name);
        pairs[cnt][1] = ppid;
        cnt++;
    }
    closedir(d);
    int *res = rc ? NULL : malloc((cnt + 1) * sizeof *res);
    if (!rc && !res)
        rc = ms_error(MS_ERR_NOMEM, "process list");
    size_t nres = 0;
    if (!rc) {
        /* Grow the set until no process has a parent in it. */
        bool grew = true;
        while (grew) {
            grew = false;
            for (size_t i = 0; i < cnt; i++) {
                if (pairs[i][0] == 0)
                    continue;
                bool parent_in = pairs[i][1] == root;
                for (size_t j = 0; !parent_in && j < nres; j++)
                    parent_in = res[j] == pairs[i][1];
                if (parent_in && pairs[i][0] != root) {
                    res[nres++] = pairs[i][0];
                    pairs[i][0] = 0;
                    grew = true;
                }
            }
        }
    }
    free(pairs);
    if (rc) {
        free(res);
        return rc;
    }
    *out = res;
    *n = nres;
    return MS_OK;
}

int ms_proc_all_stopped(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return ms_error(MS_ERR_CLOSED, "process %d is gone", pid);
    int result = 1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char tpath[320], st;
        int ppid;
        snprintf(tpath, sizeof tpath, "/proc/%d/task/%s/stat", pid, e->d_name);
        if (read_stat(tpath, &st, &ppid) < 0)
            continue; /* the thread just exited */
        if (st != 'T' && st != 't' && st != 'Z' && st != 'X') {
            result = 0;
            break;
        }
    }
    closedir(d);
    return result;
}
