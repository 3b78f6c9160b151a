/* rdma transport: registration cache for zero-copy sends.
 *
 * A send piece of at least zcopy_min bytes is written straight from the
 * caller's memory, which must be registered. Registering pins pages and costs
 * more than copying a few hundred KiB, so registrations are kept in a small
 * per-connection cache keyed by page-aligned address range, evicted least
 * recently used. The hazard of any such cache is a buffer freed and its
 * address reused by a new mapping: the registration still pins the old pages
 * and would send stale bytes. Because those old pages stay pinned, the new
 * mapping cannot get them, so comparing the range's physical page numbers
 * (from /proc/self/pagemap) with the ones seen at registration time detects
 * exactly that case (and copy-on-write after fork). Reading page numbers
 * needs CAP_SYS_ADMIN; without it the cache is off and every byte is copied
 * through the registered staging ring. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rdma/rdma_priv.h"

#define PM_PRESENT (1ull << 63)
#define PM_PFN_MASK ((1ull << 55) - 1)
/* Larger pieces are copied: pinning them would hold too much memory. */
#define RD_REG_MAX_BYTES (64ull << 20)

static pthread_mutex_t pm_mu = PTHREAD_MUTEX_INITIALIZER;
static int pm_fd = -1;
static pid_t pm_pid;
static size_t page_sz;

/* The pagemap fd of this process (a forked child must open its own). */
static int pagemap_fd(void)
{
    pthread_mutex_lock(&pm_mu);
    pid_t me = getpid();
    if (pm_pid != me) {
        if (pm_fd >= 0)
            close(pm_fd);
        pm_pid = me;
        page_sz = (size_t)sysconf(_SC_PAGESIZE);
        pm_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        volatile uint64_t probe = 1;
        uint64_t e = 0;
        if (pm_fd >= 0 &&
            (pread(pm_fd, &e, sizeof(e), (off_t)((uintptr_t)&probe / page_sz * 8)) != sizeof(e) ||
             !(e & PM_PRESENT) || !(e & PM_PFN_MASK))) {
            close(pm_fd);
            pm_fd = -1;
        }
        (void)probe;
    }
    int fd = pm_fd;
    pthread_mutex_unlock(&pm_mu);
    return fd;
}

bool rd_reg_usable(void) { return pagemap_fd() >= 0; }

/* Read the page entries of [start, end) into out (one per page). */
static bool read_pfns(uintptr_t start, uintptr_t end, uint64_t *out)
{
    int fd = pagemap_fd();
    if (fd < 0)
        return false;
    size_t n = (end - start) / page_sz, done = 0;
    while (done < n) {
        ssize_t r = pread(fd, out + done, (n - done) * 8, (off_t)((start / page_sz + done) * 8));
        if (r <= 0 || r % 8)
            return false;
        done += (size_t)r / 8;
    }
    for (size_t i = 0; i < n; i++) {
        if (!(out[i] & PM_PRESENT))
            return false;
        out[i] &= PM_PRESENT | PM_PFN_MASK;
    }
    return true;
}

static bool same_pages(const rd_reg *r, uintptr_t start, uintptr_t end)
{
    uint64_t buf[512];
    size_t first = (start - r->start) / page_sz, n = (end - start) / page_sz;
    for (size_t i = 0; i < n; i += 512) {
        size_t k = n - i < 512 ? n - i : 512;
        uintptr_t a = start + i * page_sz;
        if (!read_pfns(a, a + k * page_sz, buf) || memcmp(buf, r->pfn + first + i, k * 8))
            return false;
    }
    return true;
}

static void drop(rd_reg *r)
{
    if (r->mr)
        ibv_dereg_mr(r->mr);
    free(r->pfn);
    memset(r, 0, sizeof(*r));
}

void rd_reg_clear(rd_conn *c)
{
    for (unsigned i = 0; c->regs && i < c->nregs; i++)
        drop(&c->regs[i]);
}

/* A free entry, or the least recently used one not needed by this send. */
static rd_reg *victim(rd_conn *c)
{
    rd_reg *best = NULL;
    for (unsigned i = 0; i < c->nregs; i++) {
        rd_reg *r = &c->regs[i];
        if (!r->mr)
            return r;
        if (r->stamp != c->gen && (!best || r->stamp < best->stamp))
            best = r;
    }
    return best;
}

struct ibv_mr *rd_reg_get(rd_conn *c, const void *p, size_t len)
{
    if (!c->st.zcopy || c->torn_down || !c->nregs)
        return NULL;
    uintptr_t start = (uintptr_t)p & ~(uintptr_t)(page_sz - 1);
    uintptr_t end = ((uintptr_t)p + len + page_sz - 1) & ~(uintptr_t)(page_sz - 1);
    if (end - start > RD_REG_MAX_BYTES)
        return NULL;
    for (unsigned i = 0; i < c->nregs; i++) {
        rd_reg *r = &c->regs[i];
        if (!r->mr || r->start > start || end > r->end)
            continue;
        /* Checked once per sendv: the caller may not remap mid-call. */
        if (r->stamp == c->gen)
            return r->mr;
        if (same_pages(r, start, end)) {
            r->stamp = c->gen;
            c->st.reg_hits++;
            return r->mr;
        }
        c->st.reg_stale++;
        drop(r);
        break;
    }
    rd_reg *r = victim(c);
    if (!r)
        return NULL;
    drop(r);
    size_t n = (end - start) / page_sz;
    r->pfn = malloc(n * 8);
    r->mr = r->pfn ? ibv_reg_mr(c->pd, (void *)start, end - start, 0) : NULL;
    if (!r->mr || !read_pfns(start, end, r->pfn)) {
        ms_log(MS_LOG_DEBUG, "rdma %s: cannot register %zu bytes at %p for zero-copy (%s); copying",
               c->base.peer, (size_t)(end - start), (void *)start, r->mr ? "page not present" : strerror(errno));
        drop(r);
        c->st.reg_failures++;
        return NULL;
    }
    r->start = start;
    r->end = end;
    r->stamp = c->gen;
    c->st.reg_misses++;
    return r->mr;
}
