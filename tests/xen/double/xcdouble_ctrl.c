/* libxenctrl.so.4.17 test double: interface handles, shadow control, and
 * log-dirty bitmaps produced by a deterministic guest model. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xenctrl.h>

#include "xcdouble.h"

static struct {
    bool init, pv;
    uint64_t pages, seed;
    double dirty;
    uint16_t *version;
    unsigned cleans;       /* log-dirty CLEAN calls so far */
    const uint8_t *image;
    size_t image_len;
    FILE *log;
} g;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t z = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull;
    z ^= z >> 31;
    z *= 0xD6E8FEB86659FD93ull;
    return z ^ (z >> 32);
}

static void setup(void)
{
    const char *v;
    g.pages = (v = getenv("XCDOUBLE_PAGES")) ? strtoull(v, NULL, 0) : 2048;
    if (g.pages < 16)
        g.pages = 16;
    g.pv = (v = getenv("XCDOUBLE_TYPE")) && !strcmp(v, "pv");
    g.dirty = (v = getenv("XCDOUBLE_DIRTY")) ? strtod(v, NULL) : 0.05;
    g.seed = (v = getenv("XCDOUBLE_SEED")) ? strtoull(v, NULL, 0) : 1;
    g.version = calloc(g.pages, sizeof(*g.version));
    if ((v = getenv("XCDOUBLE_IMAGE"))) {
        int fd = open(v, O_RDONLY);
        struct stat sb;
        if (fd >= 0 && fstat(fd, &sb) == 0 && sb.st_size > 0) {
            void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (m != MAP_FAILED) {
                g.image = m;
                g.image_len = (size_t)sb.st_size;
            }
        }
        if (fd >= 0)
            close(fd);
    }
    if ((v = getenv("XCDOUBLE_LOG")))
        g.log = fopen(v, "a");
    g.init = true;
}

static void init(void) { pthread_once(&once, setup); }

uint64_t xcdouble_pages(void)
{
    init();
    return g.pages;
}

bool xcdouble_is_pv(void)
{
    init();
    return g.pv;
}

void xcdouble_log(const char *fmt, ...)
{
    init();
    if (!g.log)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(g.log, fmt, ap);
    va_end(ap);
    fputc('\n', g.log);
    fflush(g.log);
}

unsigned xcdouble_type(uint64_t pfn)
{
    init();
    if (!g.pv)
        return g.pages > 0xc0 && pfn >= 0xa0 && pfn < 0xc0 ? 0xf : 0x0; /* VGA hole */
    static const unsigned fixed[8] = {0xc, 0x4, 0xb, 0x3, 0xa, 0x2, 0x9, 0x1};
    if (pfn >= 1 && pfn <= 8)
        return fixed[pfn - 1];
    return pfn == g.pages - 2 ? 0xd : 0x0; /* one broken page */
}

void xcdouble_page(uint64_t pfn, uint8_t *page)
{
    init();
    memset(page, 0, 4096);
    if (g.image) {
        size_t np = (g.image_len + 4095) / 4096, off = (size_t)(pfn % np) * 4096;
        size_t n = g.image_len - off < 4096 ? g.image_len - off : 4096;
        memcpy(page, g.image + off, n);
    } else {
        uint64_t k = mix(g.seed, pfn) % 10;
        if (k >= 4 && k < 7)
            for (unsigned i = 0; i < 4096; i++)
                page[i] = (uint8_t)("guest text page, mostly words and spaces "[(i + pfn) % 41]);
        else if (k >= 7 && k < 9)
            for (unsigned i = 0; i < 4096; i += 8) {
                uint64_t v = ((pfn + i) << 12) | 0x67;
                memcpy(page + i, &v, 8);
            }
        else if (k == 9)
            for (unsigned i = 0; i < 4096; i += 8) {
                uint64_t v = mix(pfn, i);
                memcpy(page + i, &v, 8);
            }
    }
    for (unsigned v = 1; v <= g.version[pfn]; v++) {
        uint64_t h = mix(g.seed ^ pfn, v);
        size_t at = (size_t)(h % 510) * 8;
        memcpy(page + at, &h, 8);
        memcpy(page + at + 8, &v, sizeof(v));
    }
}

xc_interface *xc_interface_open(xentoollog_logger *logger, xentoollog_logger *dombuild_logger, unsigned open_flags)
{
    (void)logger;
    (void)dombuild_logger;
    (void)open_flags;
    init();
    return calloc(1, 64); /* an opaque handle nobody looks into */
}

int xc_interface_close(xc_interface *xch)
{
    free(xch);
    return 0;
}

int xc_shadow_control(xc_interface *xch, uint32_t domid, unsigned int sop, unsigned int *mb, unsigned int mode)
{
    (void)xch;
    (void)mb;
    (void)mode;
    xcdouble_log("shadow_control dom %u op %u", domid, sop);
    return 0;
}

/* The guest ran since the last call: a hot tenth of memory takes most of
 * the writes, so rounds do not converge below libxc's 50-page target. */
long long xc_logdirty_control(xc_interface *xch, uint32_t domid, unsigned int sop, xc_hypercall_buffer_t *bitmap,
                              unsigned long pages, unsigned int mode, xc_shadow_op_stats_t *stats)
{
    (void)xch;
    init();
    if (sop != XEN_DOMCTL_SHADOW_OP_CLEAN || !bitmap || !bitmap->hbuf || pages != g.pages) {
        errno = EINVAL;
        return -1;
    }
    unsigned long *bm = bitmap->hbuf;
    size_t words = (pages + 63) / 64;
    memset(bm, 0, words * sizeof(*bm));
    g.cleans++;
    /* After the suspend the guest is paused: the final interval is short. */
    double frac = (mode & XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL) ? g.dirty / 4 : g.dirty;
    uint64_t want = (uint64_t)(frac * (double)pages), count = 0;
    uint64_t hot = pages / 10 ? pages / 10 : 1;
    for (uint64_t i = 0; i < want; i++) {
        uint64_t h = mix(g.seed * 131 + g.cleans, i);
        uint64_t pfn = h % 100 < 80 ? (pages / 3 + (h >> 8) % hot) % pages : (h >> 8) % pages;
        if (bm[pfn / 64] & (1ul << (pfn % 64)))
            continue;
        bm[pfn / 64] |= 1ul << (pfn % 64);
        if (g.version[pfn] < UINT16_MAX)
            g.version[pfn]++;
        count++;
    }
    if (stats) {
        stats->fault_count = 0;
        stats->dirty_count = (uint32_t)count;
    }
    xcdouble_log("logdirty dom %u clean%s %llu dirty", domid,
                 (mode & XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL) ? " final" : "", (unsigned long long)count);
    return (long long)pages;
}
