/* process: the memory of a running Linux process (or process tree),
 * tracked with userfaultfd asynchronous write-protect and PAGEMAP_SCAN.
 * The model and the numbering are described in sources.h; the measured
 * mechanism in docs/process-dirty-tracking.md (shared docs). */
#include "sources/proc_int.h"
#include "sources/uffd_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SCAN_VEC 512
#define READ_IOV 1024
#define REPORT_WAIT_NS 5000000000ull /* spawn: how long the preload may take to report */
#define PENDING_MAX 64

enum { M_NONE, M_PRELOAD, M_INJECT };

typedef struct proc {
    int pid;
    int pidfd;
    int uffd;        /* our copy; -1 while the process has none */
    int pagemap;
    uint64_t serial; /* private object id; renewed when the mm changes */
    ms_vma *vmas;
    size_t nvmas;
    int method;
    int waits;       /* rescans spent waiting for the preload's report */
    bool inject_failed;
    bool mark;
} proc;

/* A run of slots owned by pages [pg, pg+n) of object (hi, lo). The same
 * struct, without base, describes the memory needed at a rescan. */
typedef struct span {
    uint64_t hi, lo, pg, n, base;
    bool shared;
} span;

typedef struct run {
    uint64_t base, n;
} run;

typedef struct taken {
    int pid, pidfd, uffd;
} taken;

typedef struct psrc {
    ms_process_opts o;
    ms_addr_range *filter;
    size_t nfilter;
    bool tree, spawned, grow, paused, built;
    int root_pid;
    int report_fd;
    proc **procs;
    size_t nprocs;
    span *spans; /* sorted by (hi, lo, pg), non-overlapping */
    size_t nspans;
    size_t *by_base;
    run *free;   /* free slot runs, sorted by base */
    size_t nfree;
    uint64_t hw, capacity;
    uint64_t *carry; /* renumbering seen by start(), for the first dirty() */
    taken pend[PENDING_MAX];
    size_t npend;
    uint64_t next_serial;
    int closed_code;    /* set once the root process is gone */
    char closed_msg[200];
    bool root_reaped;
    char comm[32]; /* the root process's name, for the description */
    ms_process_stats st;
} psrc;

static const ms_page_source_ops process_ops;

/* ------------------------------------------------------------ bitmaps */

static void set_bits(uint64_t *bm, uint64_t from, uint64_t n)
{
    if (!bm)
        return;
    while (n && (from % 64)) {
        ms_bit_set(bm, from++);
        n--;
    }
    for (; n >= 64; n -= 64, from += 64)
        bm[from / 64] = ~0ull;
    while (n--)
        ms_bit_set(bm, from++);
}

/* ------------------------------------------------------------ spans */

static int key_cmp(uint64_t h1, uint64_t l1, uint64_t h2, uint64_t l2)
{
    if (h1 != h2)
        return h1 < h2 ? -1 : 1;
    if (l1 != l2)
        return l1 < l2 ? -1 : 1;
    return 0;
}

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    int c = key_cmp(x->hi, x->lo, y->hi, y->lo);
    return c ? c : (x->pg < y->pg ? -1 : x->pg > y->pg);
}

/* First entry of the sorted list that ends after page pg of object (hi, lo). */
static size_t span_lower(const span *l, size_t n, uint64_t hi, uint64_t lo, uint64_t pg)
{
    size_t a = 0, b = n;
    while (a < b) {
        size_t m = (a + b) / 2;
        int c = key_cmp(l[m].hi, l[m].lo, hi, lo);
        if (c < 0 || (c == 0 && l[m].pg + l[m].n <= pg))
            a = m + 1;
        else
            b = m;
    }
    return a;
}

/* Mark slots of object pages [pg, pg+n) dirty. */
static void mark_obj(psrc *ps, uint64_t *out, uint64_t hi, uint64_t lo, uint64_t pg, uint64_t n)
{
    if (!out)
        return;
    uint64_t end = pg + n;
    for (size_t i = span_lower(ps->spans, ps->nspans, hi, lo, pg);
         i < ps->nspans && !key_cmp(ps->spans[i].hi, ps->spans[i].lo, hi, lo) && ps->spans[i].pg < end; i++) {
        const span *s = &ps->spans[i];
        uint64_t a = pg > s->pg ? pg : s->pg;
        uint64_t b = end < s->pg + s->n ? end : s->pg + s->n;
        if (a < b)
            set_bits(out, s->base + (a - s->pg), b - a);
    }
}

static void mark_addr(psrc *ps, uint64_t *out, const ms_vma *v, uint64_t a, uint64_t b)
{
    if (a < v->start)
        a = v->start;
    if (b > v->end)
        b = v->end;
    if (a < b)
        mark_obj(ps, out, v->obj_hi, v->obj_lo, v->pgoff + ((a - v->start) >> MS_PAGE_SHIFT),
                 (b - a + MS_PAGE_SIZE - 1) >> MS_PAGE_SHIFT);
}

static void free_slots(psrc *ps, uint64_t base, uint64_t n, uint64_t *out)
{
    set_bits(out, base, n); /* the slots now read as zeros */
    ps->st.freed_pages += n;
    size_t i = 0;
    while (i < ps->nfree && ps->free[i].base < base)
        i++;
    bool join_prev = i > 0 && ps->free[i - 1].base + ps->free[i - 1].n == base;
    bool join_next = i < ps->nfree && base + n == ps->free[i].base;
    if (join_prev && join_next) {
        ps->free[i - 1].n += n + ps->free[i].n;
        memmove(&ps->free[i], &ps->free[i + 1], (ps->nfree - i - 1) * sizeof *ps->free);
        ps->nfree--;
    } else if (join_prev) {
        ps->free[i - 1].n += n;
    } else if (join_next) {
        ps->free[i].base = base;
        ps->free[i].n += n;
    } else {
        /* free has room: runs <= spans + 1, and the array is sized for that */
        memmove(&ps->free[i + 1], &ps->free[i], (ps->nfree - i) * sizeof *ps->free);
        ps->free[i] = (run){base, n};
        ps->nfree++;
    }
}

/* Take up to `want` slots in one run: a free run that fits, else fresh
 * slots above the high-water mark, else the largest free run. */
static int alloc_run(psrc *ps, uint64_t want, uint64_t *base, uint64_t *got)
{
    for (size_t i = 0; i < ps->nfree; i++)
        if (ps->free[i].n >= want) {
            *base = ps->free[i].base;
            *got = want;
            ps->free[i].base += want;
            ps->free[i].n -= want;
            if (!ps->free[i].n) {
                memmove(&ps->free[i], &ps->free[i + 1], (ps->nfree - i - 1) * sizeof *ps->free);
                ps->nfree--;
            }
            return MS_OK;
        }
    if (ps->capacity - ps->hw >= want || (ps->capacity > ps->hw && ps->nfree == 0)) {
        *base = ps->hw;
        *got = want < ps->capacity - ps->hw ? want : ps->capacity - ps->hw;
        ps->hw += *got;
        return MS_OK;
    }
    if (ps->nfree) {
        size_t best = 0;
        for (size_t i = 1; i < ps->nfree; i++)
            if (ps->free[i].n > ps->free[best].n)
                best = i;
        *base = ps->free[best].base;
        *got = ps->free[best].n;
        memmove(&ps->free[best], &ps->free[best + 1], (ps->nfree - best - 1) * sizeof *ps->free);
        ps->nfree--;
        return MS_OK;
    }
    if (!ps->built)
        return ms_error(MS_ERR_LIMIT,
                        "process %d: more writable memory than %s (%llu MiB); give address ranges, "
                        "or a larger max_pages if it is really meant",
                        ps->root_pid, ps->grow ? "max_pages" : "RAM + swap",
                        (unsigned long long)(ps->capacity * MS_PAGE_SIZE >> 20));
    return ms_error(MS_ERR_LIMIT,
                    "process %d: new memory needs %llu more pages but the page bound is %llu (%s); "
                    "construct the source with a larger max_pages",
                    ps->root_pid, (unsigned long long)want, (unsigned long long)ps->capacity,
                    ps->grow ? "max_pages" : "fixed at construction");
}

typedef struct span_vec {
    span *v;
    size_t n, cap;
} span_vec;

static int push_span(span_vec *sv, const span *s)
{
    if (sv->n == sv->cap) {
        size_t nc = sv->cap ? sv->cap * 2 : 64;
        span *nv = realloc(sv->v, nc * sizeof *nv);
        if (!nv)
            return ms_error(MS_ERR_NOMEM, "process source: span table");
        sv->v = nv;
        sv->cap = nc;
    }
    sv->v[sv->n++] = *s;
    return MS_OK;
}

/* The memory needed now: every selected mapping of every process, merged
 * per object (a shared object mapped twice is needed once). */
static int needed_spans(psrc *ps, span_vec *need)
{
    for (size_t i = 0; i < ps->nprocs; i++) {
        proc *p = ps->procs[i];
        for (size_t j = 0; j < p->nvmas; j++) {
            const ms_vma *v = &p->vmas[j];
            span s = {v->obj_hi, v->obj_lo, v->pgoff, (v->end - v->start) >> MS_PAGE_SHIFT, 0, v->shared};
            int rc = push_span(need, &s);
            if (rc)
                return rc;
        }
    }
    if (need->n > 1)
        qsort(need->v, need->n, sizeof *need->v, span_cmp);
    size_t out = 0;
    for (size_t i = 0; i < need->n; i++) {
        span *last = out ? &need->v[out - 1] : NULL;
        if (last && !key_cmp(last->hi, last->lo, need->v[i].hi, need->v[i].lo) &&
            need->v[i].pg <= last->pg + last->n) {
            uint64_t end = need->v[i].pg + need->v[i].n;
            if (end > last->pg + last->n)
                last->n = end - last->pg;
        } else {
            need->v[out++] = need->v[i];
        }
    }
    need->n = out;
    return MS_OK;
}

/* Keep the parts of each current span still needed; free the rest. */
static int keep_or_free(psrc *ps, const span_vec *need, span_vec *next, uint64_t *out)
{
    for (size_t i = 0; i < ps->nspans; i++) {
        const span *s = &ps->spans[i];
        uint64_t at = s->pg, end = s->pg + s->n;
        size_t k = span_lower(need->v, need->n, s->hi, s->lo, at);
        for (; at < end; k++) {
            const span *c = k < need->n && !key_cmp(need->v[k].hi, need->v[k].lo, s->hi, s->lo) ? &need->v[k] : NULL;
            uint64_t cs = c && c->pg < end ? (c->pg > at ? c->pg : at) : end;
            if (cs > at)
                free_slots(ps, s->base + (at - s->pg), cs - at, out);
            if (cs >= end)
                break;
            uint64_t ce = c->pg + c->n < end ? c->pg + c->n : end;
            span kept = {s->hi, s->lo, cs, ce - cs, s->base + (cs - s->pg), s->shared};
            int rc = push_span(next, &kept);
            if (rc)
                return rc;
            at = ce;
        }
    }
    return MS_OK;
}

/* Give slots to the needed memory that has none. */
static int add_missing(psrc *ps, const span_vec *need, span_vec *next, uint64_t *out)
{
    for (size_t i = 0; i < need->n; i++) {
        const span *x = &need->v[i];
        uint64_t at = x->pg, end = x->pg + x->n;
        size_t k = span_lower(ps->spans, ps->nspans, x->hi, x->lo, at);
        while (at < end) {
            const span *c = k < ps->nspans && !key_cmp(ps->spans[k].hi, ps->spans[k].lo, x->hi, x->lo)
                                ? &ps->spans[k]
                                : NULL;
            uint64_t gap_end = c && c->pg < end ? (c->pg > at ? c->pg : at) : end;
            while (at < gap_end) {
                uint64_t base = 0, got = 0;
                int rc = alloc_run(ps, gap_end - at, &base, &got);
                if (rc)
                    return rc;
                span ns = {x->hi, x->lo, at, got, base, x->shared};
                if ((rc = push_span(next, &ns)))
                    return rc;
                set_bits(out, base, got);
                if (ps->built)
                    ps->st.new_spans++;
                at += got;
            }
            if (!c || at >= end)
                break;
            at = c->pg + c->n > at ? c->pg + c->n : at;
            k++;
        }
    }
    return MS_OK;
}

static int base_cmp(const void *a, const void *b, void *ctx)
{
    const span *sp = ctx;
    uint64_t x = sp[*(const size_t *)a].base, y = sp[*(const size_t *)b].base;
    return x < y ? -1 : x > y;
}

static int index_spans(psrc *ps)
{
    free(ps->by_base);
    ps->by_base = malloc((ps->nspans ? ps->nspans : 1) * sizeof *ps->by_base);
    if (!ps->by_base)
        return ms_error(MS_ERR_NOMEM, "process source: span index");
    for (size_t i = 0; i < ps->nspans; i++)
        ps->by_base[i] = i;
    qsort_r(ps->by_base, ps->nspans, sizeof *ps->by_base, base_cmp, ps->spans);
    return MS_OK;
}

/* Bring the slot table in line with the mappings just read. */
static int rebuild_spans(psrc *ps, uint64_t *out)
{
    span_vec need = {0}, next = {0};
    int rc = needed_spans(ps, &need);
    /* Free runs never outnumber spans + 1; make room once for the worst case. */
    size_t room = ps->nspans + need.n + ps->nfree + 2;
    run *nf = rc ? NULL : realloc(ps->free, room * 2 * sizeof *nf);
    if (!rc && !nf)
        rc = ms_error(MS_ERR_NOMEM, "process source: free list");
    if (nf)
        ps->free = nf;
    rc = rc ? rc : keep_or_free(ps, &need, &next, out);
    rc = rc ? rc : add_missing(ps, &need, &next, out);
    free(need.v);
    if (rc) {
        free(next.v);
        return rc;
    }
    if (next.n > 1)
        qsort(next.v, next.n, sizeof *next.v, span_cmp);
    size_t n = 0;
    for (size_t i = 0; i < next.n; i++) {
        span *l = n ? &next.v[n - 1] : NULL;
        if (l && !key_cmp(l->hi, l->lo, next.v[i].hi, next.v[i].lo) && l->pg + l->n == next.v[i].pg &&
            l->base + l->n == next.v[i].base)
            l->n += next.v[i].n;
        else
            next.v[n++] = next.v[i];
    }
    free(ps->spans);
    ps->spans = next.v;
    ps->nspans = n;
    return index_spans(ps);
}

/* ------------------------------------------------------------ processes */

static proc *find_proc(psrc *ps, int pid)
{
    for (size_t i = 0; i < ps->nprocs; i++)
        if (ps->procs[i]->pid == pid)
            return ps->procs[i];
    return NULL;
}

static proc *proc_by_serial(psrc *ps, uint64_t serial)
{
    for (size_t i = 0; i < ps->nprocs; i++)
        if (ps->procs[i]->serial == serial)
            return ps->procs[i];
    return NULL;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* The mm behind this pid is new (exec) or we lost its uffd: forget what we
 * knew; its memory becomes new memory with new slots. */
static void proc_reset(psrc *ps, proc *p)
{
    close_fd(&p->uffd);
    close_fd(&p->pagemap);
    free(p->vmas);
    p->vmas = NULL;
    p->nvmas = 0;
    p->serial = ps->next_serial++;
    p->method = M_NONE;
    p->waits = 0;
}

static void proc_free(proc *p)
{
    if (!p)
        return;
    close_fd(&p->uffd);
    close_fd(&p->pagemap);
    close_fd(&p->pidfd);
    free(p->vmas);
    free(p);
}

static int add_proc(psrc *ps, int pid, int pidfd, proc **out)
{
    proc **np = realloc(ps->procs, (ps->nprocs + 1) * sizeof *np);
    proc *p = calloc(1, sizeof *p);
    if (np)
        ps->procs = np;
    if (!np || !p) {
        free(p);
        return ms_error(MS_ERR_NOMEM, "process source: process table");
    }
    p->pid = pid;
    p->pidfd = pidfd >= 0 ? pidfd : ms_pidfd_open(pid);
    p->uffd = p->pagemap = -1;
    p->serial = ps->next_serial++;
    if (p->pidfd < 0) {
        int rc = ms_error(errno == ESRCH ? MS_ERR_CLOSED : MS_ERR_IO, "process %d: pidfd_open: %s", pid,
                          strerror(errno));
        free(p);
        return rc;
    }
    ps->procs[ps->nprocs++] = p;
    if (out)
        *out = p;
    return MS_OK;
}

static void remove_proc(psrc *ps, size_t i)
{
    proc_free(ps->procs[i]);
    memmove(&ps->procs[i], &ps->procs[i + 1], (ps->nprocs - i - 1) * sizeof *ps->procs);
    ps->nprocs--;
}

/* A userfaultfd taken from pid: make sure it is one. */
static bool is_uffd(int fd)
{
    char link[64], target[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return false;
    target[n] = 0;
    return strstr(target, "userfaultfd") != NULL;
}

static void adopt_uffd(psrc *ps, proc *p, int fd, int method)
{
    if (p->uffd >= 0)
        proc_reset(ps, p); /* a second report: the process exec'd */
    p->uffd = fd;
    p->method = method;
}

/* Read the preload's reports; take each fd at once (before the process
 * can close it) and hand it to its process, or keep it for a process the
 * tree has not shown yet. */
static void drain_reports(psrc *ps)
{
    if (ps->report_fd < 0)
        return;
    struct ms_uffd_report r;
    while (read(ps->report_fd, &r, sizeof r) == (ssize_t)sizeof r) {
        if (r.magic != MS_UFFD_REPORT_MAGIC)
            continue;
        if (r.fd < 0) {
            ms_log(MS_LOG_INFO, "process %d: the uffd preload failed: %s", r.pid, strerror(r.err));
            continue;
        }
        int pidfd = ms_pidfd_open(r.pid);
        int fd = pidfd >= 0 ? ms_pidfd_getfd(pidfd, r.fd) : -1;
        if (fd >= 0 && !is_uffd(fd))
            close_fd(&fd);
        if (fd < 0) {
            close_fd(&pidfd);
            continue;
        }
        proc *p = find_proc(ps, r.pid);
        if (p) {
            adopt_uffd(ps, p, fd, M_PRELOAD);
            close(pidfd);
            continue;
        }
        if (ps->npend == PENDING_MAX) { /* drop the oldest */
            close(ps->pend[0].uffd);
            close(ps->pend[0].pidfd);
            memmove(&ps->pend[0], &ps->pend[1], (PENDING_MAX - 1) * sizeof ps->pend[0]);
            ps->npend--;
        }
        ps->pend[ps->npend++] = (taken){r.pid, pidfd, fd};
    }
}

static bool take_pending(psrc *ps, proc *p)
{
    for (size_t i = 0; i < ps->npend; i++) {
        if (ps->pend[i].pid != p->pid)
            continue;
        int fd = ps->pend[i].uffd;
        bool stale = ms_pidfd_exited(ps->pend[i].pidfd);
        close(ps->pend[i].pidfd);
        memmove(&ps->pend[i], &ps->pend[i + 1], (ps->npend - i - 1) * sizeof ps->pend[0]);
        ps->npend--;
        if (stale) {
            close(fd);
            return false;
        }
        adopt_uffd(ps, p, fd, M_PRELOAD);
        return true;
    }
    return false;
}

static int inject(psrc *ps, proc *p)
{
    int fd;
    uint64_t features;
    int rc = ms_proc_inject_uffd(p->pid, p->pidfd, &fd);
    if (!rc) {
        rc = ms_proc_uffd_api(fd, &features);
        if (rc)
            close(fd);
    }
    if (rc)
        return rc;
    adopt_uffd(ps, p, fd, M_INJECT);
    return MS_OK;
}

/* Give a process without a userfaultfd one if we can. Until then all of
 * its memory is reported dirty at every call, which is always safe. */
static void ensure_uffd(psrc *ps, proc *p)
{
    if (p->uffd >= 0 || take_pending(ps, p) || ps->paused || p->inject_failed)
        return;
    /* A spawned tree's new process reports through the preload within
     * microseconds of fork(); give it one round before using ptrace. */
    if (ps->spawned && p->waits++ < 1)
        return;
    int rc = inject(ps, p);
    if (rc) {
        p->inject_failed = true;
        ms_log(MS_LOG_INFO, "process %d: not trackable, its memory is resent every round: %s", p->pid,
               ms_last_error());
    }
}

static int root_closed(psrc *ps)
{
    if (!ps->closed_code) {
        int status;
        if (ps->spawned && !ps->root_reaped && waitpid(ps->root_pid, &status, WNOHANG) == ps->root_pid) {
            ps->root_reaped = true;
            if (WIFEXITED(status))
                snprintf(ps->closed_msg, sizeof ps->closed_msg, "process %d exited with status %d", ps->root_pid,
                         WEXITSTATUS(status));
            else
                snprintf(ps->closed_msg, sizeof ps->closed_msg, "process %d was killed by signal %d (%s)",
                         ps->root_pid, WTERMSIG(status), strsignal(WTERMSIG(status)));
        } else {
            snprintf(ps->closed_msg, sizeof ps->closed_msg, "process %d exited", ps->root_pid);
        }
        ps->closed_code = MS_ERR_CLOSED;
    }
    return ms_error(ps->closed_code, "%s", ps->closed_msg);
}

static bool root_gone(psrc *ps)
{
    return ps->closed_code || (ps->nprocs && ms_pidfd_exited(ps->procs[0]->pidfd));
}

/* Follow the tree: add new descendants, drop the ones that exited. */
static int refresh_procs(psrc *ps, size_t *added)
{
    if (added)
        *added = 0;
    if (root_gone(ps))
        return root_closed(ps);
    for (size_t i = 1; i < ps->nprocs;) {
        if (ms_pidfd_exited(ps->procs[i]->pidfd))
            remove_proc(ps, i);
        else
            i++;
    }
    if (!ps->tree)
        return MS_OK;
    int *pids;
    size_t n;
    int rc = ms_proc_descendants(ps->root_pid, &pids, &n);
    if (rc)
        return rc;
    for (size_t i = 0; i < ps->nprocs; i++)
        ps->procs[i]->mark = i == 0;
    for (size_t j = 0; j < n && !rc; j++) {
        proc *p = find_proc(ps, pids[j]);
        if (!p && add_proc(ps, pids[j], -1, &p) == MS_OK) {
            if (ps->paused)
                ms_pidfd_signal(p->pidfd, SIGSTOP);
            if (added)
                (*added)++;
        }
        if (p)
            p->mark = true;
    }
    free(pids);
    for (size_t i = 1; i < ps->nprocs;) {
        if (!ps->procs[i]->mark)
            remove_proc(ps, i); /* left the tree (reparented) */
        else
            i++;
    }
    ms_clear_error();
    return MS_OK;
}

/* ------------------------------------------------------------ tracking */

static int register_vma(proc *p, ms_vma *v)
{
    struct uffdio_register reg = {.range = {v->start, v->end - v->start}, .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(p->uffd, UFFDIO_REGISTER, &reg) < 0)
        return -errno;
    struct uffdio_writeprotect wp = {.range = {v->start, v->end - v->start}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
    if (ioctl(p->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
        return -errno;
    v->registered = true;
    return 0;
}

typedef struct vma_vec {
    ms_vma *v;
    size_t n, cap;
} vma_vec;

static int emit_piece(vma_vec *vv, const ms_vma *whole, uint64_t a, uint64_t b, bool registered)
{
    ms_vma piece = *whole;
    piece.start = a;
    piece.end = b;
    piece.registered = registered;
    piece.pgoff = whole->pgoff + ((a - whole->start) >> MS_PAGE_SHIFT);
    ms_vma *last = vv->n ? &vv->v[vv->n - 1] : NULL;
    if (last && last->end == a && last->registered == registered && last->obj_hi == piece.obj_hi &&
        last->obj_lo == piece.obj_lo && last->pgoff + ((last->end - last->start) >> MS_PAGE_SHIFT) == piece.pgoff) {
        last->end = b;
        return MS_OK;
    }
    if (vv->n == vv->cap) {
        size_t nc = vv->cap ? vv->cap * 2 : 64;
        ms_vma *nv = realloc(vv->v, nc * sizeof *nv);
        if (!nv)
            return ms_error(MS_ERR_NOMEM, "process source: mapping list");
        vv->v = nv;
        vv->cap = nc;
    }
    vv->v[vv->n++] = piece;
    return MS_OK;
}

/* Split the fresh mapping list so that each entry is wholly known to be
 * registered (present and identical in the previous list) or not. */
static int carry_registration(const ms_vma *old, size_t nold, const ms_vma *cur, size_t ncur, vma_vec *res)
{
    size_t k = 0;
    int rc = MS_OK;
    for (size_t i = 0; i < ncur && !rc; i++) {
        const ms_vma *v = &cur[i];
        uint64_t at = v->start;
        while (k < nold && old[k].end <= at)
            k++;
        for (size_t j = k; at < v->end && !rc;) {
            const ms_vma *o = j < nold && old[j].start < v->end ? &old[j] : NULL;
            if (!o) {
                rc = emit_piece(res, v, at, v->end, false);
                break;
            }
            if (o->start > at) {
                rc = emit_piece(res, v, at, o->start, false);
                at = o->start;
                continue;
            }
            uint64_t e = o->end < v->end ? o->end : v->end;
            bool same = o->registered && o->obj_hi == v->obj_hi && o->obj_lo == v->obj_lo &&
                        o->pgoff - (o->start >> MS_PAGE_SHIFT) == v->pgoff - (v->start >> MS_PAGE_SHIFT);
            rc = emit_piece(res, v, at, e, same);
            at = e;
            j++;
        }
    }
    return rc;
}

static int scan_vma(psrc *ps, proc *p, const ms_vma *v, uint64_t *out)
{
    struct page_region vec[SCAN_VEC];
    uint64_t at = v->start;
    while (at < v->end) {
        struct pm_scan_arg a = {
            .size = sizeof a,
            .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            .start = at,
            .end = v->end,
            .vec = (uint64_t)(uintptr_t)vec,
            .vec_len = SCAN_VEC,
            .category_mask = PAGE_IS_WRITTEN,
            .return_mask = PAGE_IS_WRITTEN,
        };
        ps->st.scans++;
        long n = ioctl(p->pagemap, PAGEMAP_SCAN, &a);
        if (n < 0)
            return -errno;
        for (long i = 0; i < n; i++)
            mark_addr(ps, out, v, vec[i].start, vec[i].end);
        if (a.walk_end <= at || a.walk_end > v->end)
            return -EIO; /* no progress: never loop forever on a kernel surprise */
        at = a.walk_end;
    }
    return 0;
}

static int open_pagemap(proc *p)
{
    if (p->pagemap >= 0)
        return MS_OK;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/pagemap", p->pid);
    p->pagemap = open(path, O_RDONLY | O_CLOEXEC);
    if (p->pagemap < 0)
        return ms_error(errno == ENOENT || errno == ESRCH ? MS_ERR_CLOSED : MS_ERR_IO, "%s: %s", path,
                        strerror(errno));
    return MS_OK;
}

/* Register what is new, then get-and-clear what is registered. A mapping
 * that is new, could not be registered, or whose scan failed is reported
 * dirty whole: nothing written is ever lost. */
static void track_proc(psrc *ps, proc *p, uint64_t *out, uint64_t *renum, bool scan)
{
    if (p->uffd >= 0 && open_pagemap(p) != MS_OK)
        close_fd(&p->uffd); /* treated as untracked below; refresh will see it gone */
    for (size_t i = 0; i < p->nvmas; i++) {
        ms_vma *v = &p->vmas[i];
        uint64_t pages = (v->end - v->start) >> MS_PAGE_SHIFT;
        if (p->uffd < 0) {
            mark_addr(ps, renum, v, v->start, v->end);
            ps->st.untracked_pages += pages;
            continue;
        }
        if (v->registered && scan) {
            int err = scan_vma(ps, p, v, out);
            if (!err)
                continue;
            /* EPERM: a new mapping replaced it (CHECK_WPASYNC); anything
             * else: the walked part was re-protected and its dirty bits
             * are lost with the output buffer. Resend it all. */
            ps->st.scan_errors++;
            ms_log(MS_LOG_DEBUG, "process %d: scan of 0x%llx-0x%llx failed (%s); resending it", p->pid,
                   (unsigned long long)v->start, (unsigned long long)v->end, strerror(-err));
            v->registered = false;
        }
        if (!v->registered) {
            int err = register_vma(p, v);
            mark_addr(ps, renum, v, v->start, v->end);
            if (err) {
                ps->st.untracked_pages += pages;
                if (err == -ESRCH) { /* the uffd's mm is gone: the process exec'd */
                    proc_reset(ps, p);
                    return;
                }
            }
        }
    }
}

/* One pass over every process: follow the tree, reread the maps, renumber,
 * register, and (with scan) collect the dirty pages into out. Pages dirty
 * because their memory is new, gone or untrackable go to renum. */
static int rescan(ms_page_source *s, uint64_t *out, uint64_t *renum, bool scan)
{
    psrc *ps = s->priv;
    uint64_t t0 = ms_now_ns();
    drain_reports(ps);
    int rc = refresh_procs(ps, NULL);
    if (rc)
        return rc;
    for (size_t i = 0; i < ps->nprocs; i++) {
        proc *p = ps->procs[i];
        ensure_uffd(ps, p);
        ms_vma *cur = NULL;
        size_t ncur = 0;
        rc = ms_proc_read_maps(p->pid, ps->o.flags, p->serial, ps->filter, ps->nfilter, &cur, &ncur);
        if (rc == MS_ERR_CLOSED) {
            if (i == 0)
                return root_closed(ps);
            ncur = 0; /* exiting: its memory goes away */
        } else if (rc) {
            return rc;
        }
        vma_vec vv = {0};
        rc = carry_registration(p->vmas, p->nvmas, cur, ncur, &vv);
        free(cur);
        if (rc) {
            free(vv.v);
            return rc;
        }
        free(p->vmas);
        p->vmas = vv.v;
        p->nvmas = vv.n;
    }
    if ((rc = rebuild_spans(ps, renum)))
        return rc;
    for (size_t i = 0; i < ps->nprocs; i++)
        track_proc(ps, ps->procs[i], out, renum, scan);
    /* Output bits above the last slot can come only from a bug above. */
    if (root_gone(ps))
        return root_closed(ps);
    ps->st.last_dirty_s = (double)(ms_now_ns() - t0) / 1e9;
    return MS_OK;
}

/* ------------------------------------------------------------ reading */

typedef struct rbatch {
    proc *p;
    struct iovec local[READ_IOV], remote[READ_IOV];
    size_t n;
} rbatch;

/* Read the batch; a page that cannot be read (unmapped since the last
 * rescan) reads as zeros: the next dirty() reports it, its mapping having
 * changed. */
static int flush_batch(psrc *ps, rbatch *b)
{
    size_t first = 0;
    while (first < b->n) {
        ssize_t want = 0;
        for (size_t i = first; i < b->n; i++)
            want += (ssize_t)b->local[i].iov_len;
        ssize_t got = process_vm_readv(b->p->pid, &b->local[first], b->n - first, &b->remote[first], b->n - first, 0);
        if (got < 0 && errno == ESRCH) {
            if (b->p == ps->procs[0])
                return root_closed(ps);
            got = 0;
            for (size_t i = first; i < b->n; i++)
                memset(b->local[i].iov_base, 0, b->local[i].iov_len);
            break;
        }
        if (got < 0 && errno != EFAULT)
            return ms_error(MS_ERR_IO, "process %d: process_vm_readv: %s", b->p->pid, strerror(errno));
        if (got == want)
            break;
        if (got < 0)
            got = 0;
        got -= got % MS_PAGE_SIZE;
        while (got >= (ssize_t)b->local[first].iov_len) {
            got -= (ssize_t)b->local[first].iov_len;
            first++;
        }
        /* Zero the failing page and go on after it. */
        struct iovec *l = &b->local[first], *r = &b->remote[first];
        l->iov_base = (uint8_t *)l->iov_base + got;
        l->iov_len -= (size_t)got;
        r->iov_base = (uint8_t *)r->iov_base + got;
        r->iov_len -= (size_t)got;
        memset(l->iov_base, 0, MS_PAGE_SIZE);
        l->iov_base = (uint8_t *)l->iov_base + MS_PAGE_SIZE;
        l->iov_len -= MS_PAGE_SIZE;
        r->iov_base = (uint8_t *)r->iov_base + MS_PAGE_SIZE;
        r->iov_len -= MS_PAGE_SIZE;
        if (!l->iov_len)
            first++;
    }
    b->n = 0;
    return MS_OK;
}

static int batch_add(psrc *ps, rbatch *b, proc *p, uint64_t addr, uint8_t *dst)
{
    if (b->n && (b->p != p || b->n == READ_IOV)) {
        int rc = flush_batch(ps, b);
        if (rc)
            return rc;
    }
    b->p = p;
    if (b->n) {
        struct iovec *l = &b->local[b->n - 1], *r = &b->remote[b->n - 1];
        if ((uint8_t *)l->iov_base + l->iov_len == dst && (uint64_t)(uintptr_t)r->iov_base + r->iov_len == addr) {
            l->iov_len += MS_PAGE_SIZE;
            r->iov_len += MS_PAGE_SIZE;
            return MS_OK;
        }
    }
    b->local[b->n] = (struct iovec){dst, MS_PAGE_SIZE};
    b->remote[b->n] = (struct iovec){(void *)(uintptr_t)addr, MS_PAGE_SIZE};
    b->n++;
    return MS_OK;
}

static const span *span_of_slot(const psrc *ps, uint64_t slot)
{
    size_t a = 0, b = ps->nspans;
    while (a < b) {
        size_t m = (a + b) / 2;
        const span *s = &ps->spans[ps->by_base[m]];
        if (s->base + s->n <= slot)
            a = m + 1;
        else
            b = m;
    }
    if (a == ps->nspans)
        return NULL;
    const span *s = &ps->spans[ps->by_base[a]];
    return slot >= s->base ? s : NULL;
}

/* Where a page of a shared object can be read: any mapping of it. */
static proc *shared_mapping(psrc *ps, const span *s, uint64_t pg, uint64_t *addr, proc **hint_p, size_t *hint_v)
{
    proc *hp = *hint_p;
    if (hp && *hint_v < hp->nvmas) {
        const ms_vma *v = &hp->vmas[*hint_v];
        if (v->obj_hi == s->hi && v->obj_lo == s->lo && pg >= v->pgoff &&
            pg < v->pgoff + ((v->end - v->start) >> MS_PAGE_SHIFT)) {
            *addr = v->start + ((pg - v->pgoff) << MS_PAGE_SHIFT);
            return hp;
        }
    }
    for (size_t i = 0; i < ps->nprocs; i++) {
        proc *p = ps->procs[i];
        for (size_t j = 0; j < p->nvmas; j++) {
            const ms_vma *v = &p->vmas[j];
            if (v->obj_hi == s->hi && v->obj_lo == s->lo && pg >= v->pgoff &&
                pg < v->pgoff + ((v->end - v->start) >> MS_PAGE_SHIFT)) {
                *hint_p = p;
                *hint_v = j;
                *addr = v->start + ((pg - v->pgoff) << MS_PAGE_SHIFT);
                return p;
            }
        }
    }
    return NULL;
}

static const char *method_name(psrc *ps);

/* The description says what is tracked now: a started command maps most of
 * its memory after tracking began. */
static void describe(ms_page_source *s)
{
    psrc *ps = s->priv;
    snprintf(s->desc, sizeof s->desc, "pid %d (%s): %zu process%s, %zu ranges, %llu MiB, %s", ps->root_pid,
             ps->comm, ps->nprocs, ps->nprocs == 1 ? "" : "es", ps->nspans,
             (unsigned long long)(s->npages * s->page_size >> 20), method_name(ps));
}

/* Pages only ever grow in number, never past capacity. */
static void grow_to_hw(ms_page_source *s)
{
    psrc *ps = s->priv;
    if (!ps->grow || ps->hw <= s->npages)
        return;
    s->npages = ps->hw;
    describe(s);
}

static int process_read(ms_page_source *s, const uint64_t *idx, size_t n, uint8_t *out)
{
    psrc *ps = s->priv;
    if (root_gone(ps))
        return root_closed(ps);
    rbatch *b = malloc(sizeof *b);
    if (!b)
        return ms_error(MS_ERR_NOMEM, "process read: batch");
    b->n = 0;
    b->p = NULL;
    proc *hint_p = NULL;
    size_t hint_v = 0;
    int rc = MS_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        uint8_t *dst = out + i * (size_t)MS_PAGE_SIZE;
        if (idx[i] >= s->npages) {
            rc = ms_error(MS_ERR_INVAL, "read: page %llu out of range (source has %llu pages)",
                          (unsigned long long)idx[i], (unsigned long long)s->npages);
            break;
        }
        const span *sp = span_of_slot(ps, idx[i]);
        uint64_t pg = sp ? sp->pg + (idx[i] - sp->base) : 0, addr = 0;
        proc *p = NULL;
        if (sp && !sp->shared) {
            p = proc_by_serial(ps, sp->lo);
            addr = pg << MS_PAGE_SHIFT;
        } else if (sp) {
            p = shared_mapping(ps, sp, pg, &addr, &hint_p, &hint_v);
        }
        if (!p) {
            memset(dst, 0, MS_PAGE_SIZE); /* a free slot */
            continue;
        }
        rc = batch_add(ps, b, p, addr, dst);
    }
    if (!rc && b->n)
        rc = flush_batch(ps, b);
    free(b);
    return rc;
}

/* ------------------------------------------------------------ ops */

/* Get-and-clear into nothing: only writes from now on count. Memory that
 * appeared since construction is numbered now; round 0 reads s->npages as
 * it is after start(), and those pages are reported again by the first
 * dirty() for a caller that read npages earlier. */
static int process_start(ms_page_source *s)
{
    psrc *ps = s->priv;
    free(ps->carry);
    ps->carry = calloc(ms_bitmap_words(ps->capacity), 8);
    if (!ps->carry)
        return ms_error(MS_ERR_NOMEM, "process source: bitmap of %llu pages", (unsigned long long)ps->capacity);
    int rc = rescan(s, NULL, ps->carry, true);
    grow_to_hw(s);
    return rc;
}

static int process_dirty(ms_page_source *s, uint64_t *bm)
{
    psrc *ps = s->priv;
    int rc = rescan(s, bm, bm, true);
    if (ps->carry) {
        for (size_t i = 0; i < ms_bitmap_words(ps->capacity); i++)
            bm[i] |= ps->carry[i];
        free(ps->carry);
        ps->carry = NULL;
    }
    grow_to_hw(s);
    return rc;
}

static int stop_all(psrc *ps, uint64_t deadline)
{
    for (int pass = 0; pass < 20; pass++) {
        for (size_t i = 0; i < ps->nprocs; i++)
            ms_pidfd_signal(ps->procs[i]->pidfd, SIGSTOP);
        for (size_t i = 0; i < ps->nprocs;) {
            int r = ms_proc_all_stopped(ps->procs[i]->pid);
            if (r < 0 && i == 0)
                return root_closed(ps);
            if (r != 0) {
                i++;
                continue;
            }
            if (ms_now_ns() > deadline)
                return ms_error(MS_ERR_TIMEOUT, "process %d: not all threads stopped within the deadline",
                                ps->procs[i]->pid);
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        if (!ps->tree)
            return MS_OK;
        /* A fork may have raced the signals: stop newcomers too. */
        size_t added;
        int rc = refresh_procs(ps, &added);
        if (rc || added == 0)
            return rc;
    }
    return ms_error(MS_ERR_TIMEOUT, "process %d: its tree kept forking while being stopped", ps->root_pid);
}

static int process_pause(ms_page_source *s)
{
    psrc *ps = s->priv;
    if (root_gone(ps))
        return root_closed(ps);
    if (ps->paused)
        return MS_OK;
    double limit = ps->o.stop_timeout_s > 0 ? ps->o.stop_timeout_s : 10.0;
    ps->paused = true;
    int rc = stop_all(ps, ms_now_ns() + (uint64_t)(limit * 1e9));
    if (rc && rc != MS_ERR_CLOSED) {
        for (size_t i = 0; i < ps->nprocs; i++)
            ms_pidfd_signal(ps->procs[i]->pidfd, SIGCONT);
        ps->paused = false;
    }
    return rc;
}

static int process_resume(ms_page_source *s)
{
    psrc *ps = s->priv;
    for (size_t i = 0; i < ps->nprocs; i++)
        ms_pidfd_signal(ps->procs[i]->pidfd, SIGCONT);
    ps->paused = false;
    return root_gone(ps) ? root_closed(ps) : MS_OK;
}

static void untrack(proc *p)
{
    if (p->uffd < 0)
        return;
    for (size_t i = 0; i < p->nvmas; i++) {
        if (!p->vmas[i].registered)
            continue;
        struct uffdio_range r = {p->vmas[i].start, p->vmas[i].end - p->vmas[i].start};
        ioctl(p->uffd, UFFDIO_UNREGISTER, &r); /* also lifts the protection */
    }
}

/* A spawned command ends with the source: SIGTERM (with SIGCONT, as it
 * may be stopped), 3 s of grace, then SIGKILL for whatever is left. */
static void terminate_tree(psrc *ps)
{
    for (size_t i = 0; i < ps->nprocs; i++) {
        ms_pidfd_signal(ps->procs[i]->pidfd, SIGTERM);
        ms_pidfd_signal(ps->procs[i]->pidfd, SIGCONT);
    }
    uint64_t deadline = ms_now_ns() + 3000000000ull;
    while (ps->nprocs && !ms_pidfd_exited(ps->procs[0]->pidfd) && ms_now_ns() < deadline) {
        struct pollfd pf = {.fd = ps->procs[0]->pidfd, .events = POLLIN};
        poll(&pf, 1, 50);
    }
    for (size_t i = 0; i < ps->nprocs; i++)
        ms_pidfd_signal(ps->procs[i]->pidfd, SIGKILL);
    if (!ps->root_reaped) {
        while (waitpid(ps->root_pid, NULL, 0) < 0 && errno == EINTR)
            ;
        ps->root_reaped = true;
    }
}

static void process_destroy(ms_page_source *s)
{
    psrc *ps = s->priv;
    if (ps->spawned) {
        terminate_tree(ps);
    } else {
        for (size_t i = 0; i < ps->nprocs; i++)
            untrack(ps->procs[i]);
        if (ps->paused)
            for (size_t i = 0; i < ps->nprocs; i++)
                ms_pidfd_signal(ps->procs[i]->pidfd, SIGCONT);
    }
    for (size_t i = 0; i < ps->nprocs; i++)
        proc_free(ps->procs[i]);
    for (size_t i = 0; i < ps->npend; i++) {
        close(ps->pend[i].uffd);
        close(ps->pend[i].pidfd);
    }
    close_fd(&ps->report_fd);
    free(ps->procs);
    free(ps->spans);
    free(ps->by_base);
    free(ps->free);
    free(ps->filter);
    free(ps->carry);
    free(ps);
    free(s);
}

static const ms_page_source_ops process_ops = {
    .name = "process",
    .start = process_start,
    .dirty = process_dirty,
    .read = process_read,
    .pause = process_pause,
    .resume = process_resume,
    .advance = NULL,
    .destroy = process_destroy,
};

/* ------------------------------------------------------------ construction */

int ms_process_probe(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        return ms_error(MS_ERR_UNSUPPORTED, "userfaultfd(): %s%s", strerror(errno),
                        errno == ENOSYS ? " (kernel built without userfaultfd)" : "");
    struct uffdio_api api = {.api = UFFD_API, .features = 0};
    int rc = ioctl(fd, UFFDIO_API, &api);
    close(fd);
    if (rc < 0)
        return ms_error(MS_ERR_UNSUPPORTED, "UFFDIO_API: %s", strerror(errno));
    if ((api.features & MS_UFFD_NEEDED) != MS_UFFD_NEEDED)
        return ms_error(MS_ERR_UNSUPPORTED,
                        "userfaultfd lacks asynchronous write-protect (features 0x%llx): needs Linux >= 6.7",
                        (unsigned long long)api.features);
    void *page = mmap(NULL, MS_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    rc = MS_OK;
    if (page == MAP_FAILED || pm < 0) {
        rc = ms_error(MS_ERR_UNSUPPORTED, "cannot open /proc/self/pagemap: %s", strerror(errno));
    } else {
        struct page_region vec[1];
        struct pm_scan_arg a = {.size = sizeof a,
                                .start = (uint64_t)(uintptr_t)page,
                                .end = (uint64_t)(uintptr_t)page + MS_PAGE_SIZE,
                                .vec = (uint64_t)(uintptr_t)vec,
                                .vec_len = 1,
                                .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_WRITTEN,
                                .return_mask = PAGE_IS_PRESENT};
        if (ioctl(pm, PAGEMAP_SCAN, &a) < 0)
            rc = ms_error(MS_ERR_UNSUPPORTED, "PAGEMAP_SCAN: %s (needs Linux >= 6.7)", strerror(errno));
    }
    if (pm >= 0)
        close(pm);
    if (page != MAP_FAILED)
        munmap(page, MS_PAGE_SIZE);
    return rc;
}

static int new_source(const ms_process_opts *opts, ms_page_source **sp)
{
    ms_page_source *s = calloc(1, sizeof *s);
    psrc *ps = calloc(1, sizeof *ps);
    if (!s || !ps) {
        free(s);
        free(ps);
        return ms_error(MS_ERR_NOMEM, "process source: out of memory");
    }
    if (opts)
        ps->o = *opts;
    ps->o.ranges = NULL; /* copied below; the caller's array may go away */
    ps->report_fd = -1;
    ps->next_serial = 1;
    ps->root_reaped = true; /* nothing of ours to reap unless spawned */
    ps->grow = ps->o.max_pages > 0;
    ps->capacity = UINT64_MAX;
    s->ops = &process_ops;
    s->priv = ps;
    s->page_size = MS_PAGE_SIZE;
    *sp = s;
    if (!opts || !opts->ranges || !opts->nranges)
        return MS_OK;
    ps->filter = malloc(opts->nranges * sizeof *ps->filter);
    if (!ps->filter) {
        process_destroy(s);
        return ms_error(MS_ERR_NOMEM, "process source: range list");
    }
    for (size_t i = 0; i < opts->nranges; i++) {
        ps->filter[i] = opts->ranges[i];
        if ((ps->filter[i].start | ps->filter[i].end) % MS_PAGE_SIZE || ps->filter[i].start >= ps->filter[i].end) {
            int rc = ms_error(MS_ERR_INVAL, "range %zu (0x%llx-0x%llx) is empty or not page aligned", i,
                              (unsigned long long)ps->filter[i].start, (unsigned long long)ps->filter[i].end);
            process_destroy(s);
            return rc;
        }
    }
    ps->nfilter = opts->nranges;
    return MS_OK;
}

static const char *method_name(psrc *ps)
{
    int seen = 0;
    for (size_t i = 0; i < ps->nprocs; i++)
        seen |= 1 << ps->procs[i]->method;
    seen &= ~(1 << M_NONE);
    return seen == (1 << M_PRELOAD) ? "preload" : seen == (1 << M_INJECT) ? "inject" : seen ? "mixed" : "none";
}

/* Without a bound from the caller, tracking more than RAM + swap cannot be
 * meant: it is address space reserved but never used (a sanitizer's shadow,
 * a sparse arena), and write-protecting it would build page tables for all
 * of it. */
static uint64_t default_bound(void)
{
    struct sysinfo si;
    if (sysinfo(&si) < 0)
        return UINT64_MAX;
    return ((uint64_t)si.totalram + si.totalswap) * si.mem_unit / MS_PAGE_SIZE;
}

/* Register everything found now and fix the numbering. */
static int finish_build(ms_page_source *s)
{
    psrc *ps = s->priv;
    ps->capacity = ps->grow ? ps->o.max_pages : default_bound();
    int rc = rescan(s, NULL, NULL, false);
    if (rc)
        return rc;
    if (ps->hw == 0)
        return ms_error(MS_ERR_INVAL, "process %d: no writable memory %s", ps->root_pid,
                        ps->filter ? "in the given ranges" : "to track");
    if (!ps->grow)
        ps->capacity = ps->hw;
    s->npages = ps->hw;
    ps->built = true;
    snprintf(ps->comm, sizeof ps->comm, "?");
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", ps->root_pid);
    FILE *f = fopen(path, "re");
    if (f) {
        if (fgets(ps->comm, sizeof ps->comm, f))
            ps->comm[strcspn(ps->comm, "\n")] = 0;
        fclose(f);
    }
    describe(s);
    return MS_OK;
}

int ms_process_source_attach(int pid, const ms_process_opts *opts, ms_page_source **out)
{
    *out = NULL;
    if (pid <= 0 || pid == getpid())
        return ms_error(MS_ERR_INVAL, "attach: cannot track pid %d", pid);
    if (opts && opts->nranges && (opts->flags & MS_PROC_CHILDREN))
        return ms_error(MS_ERR_INVAL, "attach: address ranges name one process; they exclude MS_PROC_CHILDREN");
    int rc = ms_process_probe();
    if (rc)
        return rc;
    ms_page_source *s;
    if ((rc = new_source(opts, &s)))
        return rc;
    psrc *ps = s->priv;
    ps->root_pid = pid;
    ps->tree = (ps->o.flags & MS_PROC_CHILDREN) != 0;
    proc *root;
    rc = add_proc(ps, pid, -1, &root);
    rc = rc ? rc : inject(ps, root);
    rc = rc ? rc : finish_build(s);
    if (rc) {
        ms_errbuf eb = {0};
        ms_errbuf_capture(&eb);
        process_destroy(s);
        return ms_errbuf_raise(&eb);
    }
    *out = s;
    return MS_OK;
}

static const char *find_preload(const ms_process_opts *o)
{
    if (o && o->preload)
        return o->preload;
    const char *env = getenv("MIGSTREAM_UFFD_PRELOAD");
    if (env && *env)
        return env;
#ifdef MS_UFFD_PRELOAD_BUILD
    if (access(MS_UFFD_PRELOAD_BUILD, R_OK) == 0)
        return MS_UFFD_PRELOAD_BUILD;
#endif
#ifdef MS_UFFD_PRELOAD_INSTALLED
    if (access(MS_UFFD_PRELOAD_INSTALLED, R_OK) == 0)
        return MS_UFFD_PRELOAD_INSTALLED;
#endif
    return NULL;
}

extern char **environ;

/* The child's environment: ours plus the preload (in front of any other)
 * and the report fd. Built before fork: the child only execs. */
static char **child_env(const char *preload, int report_w)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 3, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    const char *old = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!strncmp(environ[i], "LD_PRELOAD=", 11))
            old = environ[i] + 11;
        else if (strncmp(environ[i], MS_UFFD_REPORT_ENV "=", strlen(MS_UFFD_REPORT_ENV) + 1))
            env[k++] = environ[i];
    }
    char *pre = NULL, *rep = NULL;
    if (asprintf(&pre, "LD_PRELOAD=%s%s%s", preload, old && *old ? ":" : "", old ? old : "") < 0)
        pre = NULL;
    if (asprintf(&rep, "%s=%d", MS_UFFD_REPORT_ENV, report_w) < 0)
        rep = NULL;
    if (!pre || !rep) {
        free(pre);
        free(rep);
        free(env);
        return NULL;
    }
    env[k++] = pre;
    env[k++] = rep;
    env[k] = NULL;
    return env;
}

static void free_child_env(char **env)
{
    size_t n = 0;
    while (env[n])
        n++;
    free(env[n - 1]); /* the last two are ours */
    free(env[n - 2]);
    free(env);
}

typedef struct spawn_fds {
    int rep[2], st[2], outfd;
} spawn_fds;

static void close_spawn_fds(spawn_fds *f)
{
    close_fd(&f->rep[1]);
    close_fd(&f->st[0]);
    close_fd(&f->st[1]);
    close_fd(&f->outfd);
}

static void __attribute__((noreturn)) child_exec(char *const argv[], char **env, spawn_fds *f)
{
    fcntl(f->rep[1], F_SETFD, 0); /* the only fd the command inherits from us */
    if (f->outfd >= 0) {
        dup2(f->outfd, 1);
        dup2(f->outfd, 2);
    }
    execvpe(argv[0], argv, env);
    int err = errno;
    ssize_t w = write(f->st[1], &err, sizeof err);
    (void)w;
    _exit(127);
}

/* Wait for the root's report; false if it never came (static binary,
 * setuid, a preload that failed): the caller falls back to injection. */
static bool wait_root_report(psrc *ps, proc *root)
{
    uint64_t deadline = ms_now_ns() + REPORT_WAIT_NS;
    while (root->uffd < 0 && ms_now_ns() < deadline && !ms_pidfd_exited(root->pidfd)) {
        struct pollfd pf[2] = {{.fd = ps->report_fd, .events = POLLIN}, {.fd = root->pidfd, .events = POLLIN}};
        poll(pf, 2, 100);
        drain_reports(ps);
        take_pending(ps, root);
    }
    return root->uffd >= 0;
}

static int start_child(psrc *ps, char *const argv[], const char *preload, spawn_fds *f)
{
    char **env = child_env(preload, f->rep[1]);
    if (!env)
        return ms_error(MS_ERR_NOMEM, "spawn: environment");
    pid_t pid = fork();
    if (pid == 0)
        child_exec(argv, env, f);
    int err = errno;
    free_child_env(env);
    if (pid < 0)
        return ms_error(MS_ERR_IO, "spawn: fork: %s", strerror(err));
    ps->root_pid = pid;
    ps->root_reaped = false;
    close_fd(&f->st[1]);
    int exec_err = 0;
    ssize_t n;
    while ((n = read(f->st[0], &exec_err, sizeof exec_err)) < 0 && errno == EINTR)
        ;
    if (n == (ssize_t)sizeof exec_err) {
        waitpid(pid, NULL, 0);
        ps->root_reaped = true;
        return ms_error(MS_ERR_INVAL, "spawn: cannot run '%s': %s", argv[0], strerror(exec_err));
    }
    return MS_OK;
}

int ms_process_source_spawn(char *const argv[], const ms_process_opts *opts, ms_page_source **out)
{
    *out = NULL;
    if (!argv || !argv[0])
        return ms_error(MS_ERR_INVAL, "spawn: empty command");
    if (opts && opts->nranges)
        return ms_error(MS_ERR_INVAL, "spawn: address ranges are for attach only");
    int rc = ms_process_probe();
    if (rc)
        return rc;
    const char *preload = find_preload(opts);
    if (!preload || access(preload, R_OK) != 0)
        return ms_error(MS_ERR_INVAL, "spawn: uffd preload library %s not found (set MIGSTREAM_UFFD_PRELOAD)",
                        preload ? preload : "libmigstream-uffd.so");
    ms_page_source *s;
    if ((rc = new_source(opts, &s)))
        return rc;
    psrc *ps = s->priv;
    ps->spawned = true;
    ps->tree = !(ps->o.flags & MS_PROC_ROOT_ONLY);
    /* A command that has just started has almost no memory yet: a count
     * fixed now would be useless, so spawn always grows (by default up to
     * RAM + swap). */
    if (!ps->grow) {
        ps->grow = true;
        ps->o.max_pages = default_bound();
    }
    spawn_fds f = {{-1, -1}, {-1, -1}, -1};
    /* Non-blocking: a preload must never stall its process on a full pipe. */
    if (pipe2(f.rep, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(f.st, O_CLOEXEC) < 0)
        rc = ms_error(MS_ERR_IO, "spawn: pipe: %s", strerror(errno));
    ps->report_fd = f.rep[0];
    if (!rc && ps->o.output) {
        f.outfd = open(ps->o.output, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (f.outfd < 0)
            rc = ms_error(MS_ERR_IO, "spawn: %s: %s", ps->o.output, strerror(errno));
    }
    rc = rc ? rc : start_child(ps, argv, preload, &f);
    close_spawn_fds(&f);
    proc *root = NULL;
    rc = rc ? rc : add_proc(ps, ps->root_pid, -1, &root);
    if (!rc && !wait_root_report(ps, root)) {
        if (ms_pidfd_exited(root->pidfd)) {
            rc = root_closed(ps);
        } else {
            ms_log(MS_LOG_INFO, "spawn: %s did not load the uffd preload; injecting instead", argv[0]);
            rc = inject(ps, root);
        }
    }
    rc = rc ? rc : finish_build(s);
    if (rc) {
        ms_errbuf eb = {0};
        ms_errbuf_capture(&eb);
        if (!ps->nprocs && !ps->root_reaped) { /* forked but not in the table */
            kill(ps->root_pid, SIGKILL);
            waitpid(ps->root_pid, NULL, 0);
            ps->root_reaped = true;
        }
        process_destroy(s);
        return ms_errbuf_raise(&eb);
    }
    *out = s;
    return MS_OK;
}

/* ------------------------------------------------------------ queries */

int ms_process_source_pid(const ms_page_source *s)
{
    return s && s->ops == &process_ops ? ((const psrc *)s->priv)->root_pid : -1;
}

uint64_t ms_source_max_pages(const ms_page_source *s)
{
    if (s->ops == &process_ops) {
        const psrc *ps = s->priv;
        return ps->grow ? ps->capacity : s->npages;
    }
    return s->npages;
}

int ms_process_source_ranges(ms_page_source *s, ms_process_range **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (s->ops != &process_ops)
        return ms_error(MS_ERR_INVAL, "%s is not a process source", s->ops->name);
    psrc *ps = s->priv;
    ms_process_range *r = calloc(ps->nspans ? ps->nspans : 1, sizeof *r);
    if (!r)
        return ms_error(MS_ERR_NOMEM, "process ranges");
    proc *hint_p = NULL;
    size_t hint_v = 0, k = 0;
    for (size_t i = 0; i < ps->nspans; i++) {
        const span *sp = &ps->spans[ps->by_base[i]];
        uint64_t addr = sp->pg << MS_PAGE_SHIFT;
        proc *p = sp->shared ? shared_mapping(ps, sp, sp->pg, &addr, &hint_p, &hint_v) : proc_by_serial(ps, sp->lo);
        if (!p)
            continue;
        bool tracked = p->uffd >= 0;
        for (size_t j = 0; j < p->nvmas; j++)
            if (p->vmas[j].start <= addr && addr < p->vmas[j].end)
                tracked = tracked && p->vmas[j].registered;
        r[k++] = (ms_process_range){p->pid, addr, sp->base, sp->n, sp->shared, tracked};
    }
    *out = r;
    *n = k;
    return MS_OK;
}

void ms_process_source_stats(const ms_page_source *s, ms_process_stats *st)
{
    memset(st, 0, sizeof *st);
    if (s->ops != &process_ops)
        return;
    psrc *ps = s->priv;
    *st = ps->st;
    st->processes = ps->nprocs;
    uint64_t backed = 0;
    for (size_t i = 0; i < ps->nspans; i++)
        backed += ps->spans[i].n;
    st->tracked_pages = backed;
    st->method = method_name(ps);
}
