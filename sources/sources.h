/* migstream page sources: where the pages of a migration come from, and which
 * of them the guest dirtied since the last look.
 *
 * One ops table (start tracking, get-and-clear dirty bitmap, read pages,
 * pause, resume) for every kind: a live Linux process tracked with
 * userfaultfd write-protect + PAGEMAP_SCAN, a recorded dirty trace, and
 * synthetic workload models. Xen's log-dirty lives in xen/. The scheduler
 * (fragsched/) and the engine use only this interface. */
#ifndef MS_SOURCES_H
#define MS_SOURCES_H

#include "common/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_page_source ms_page_source;

typedef struct ms_page_source_ops {
    const char *name;
    /* Begin dirty tracking; every page counts as dirty before the first
     * ms_source_dirty() call (round 0 sends everything). */
    int (*start)(ms_page_source *s);
    /* Get and clear: OR into `bitmap` (npages bits, bit i = page i) every
     * page written since the previous call (or since start). On any
     * tracking error the source reports the affected pages as dirty rather
     * than lose one. */
    int (*dirty)(ms_page_source *s, uint64_t *bitmap);
    /* Copy pages idx[0..n) into out (n * page_size bytes). */
    int (*read)(ms_page_source *s, const uint64_t *idx, size_t n, uint8_t *out);
    int (*pause)(ms_page_source *s);  /* stop the workload (stop-and-copy) */
    int (*resume)(ms_page_source *s); /* let it run again (migration failed or done) */
    /* Simulated sources only (NULL for real ones): let `seconds` of virtual
     * time pass, dirtying pages as the model or trace says. */
    int (*advance)(ms_page_source *s, double seconds);
    void (*destroy)(ms_page_source *s);
} ms_page_source_ops;

struct ms_page_source {
    const ms_page_source_ops *ops;
    uint64_t npages;      /* pages are numbered 0..npages-1 */
    uint32_t page_size;
    char desc[128];       /* human-readable, e.g. "pid 1234: 3 ranges, 512 MiB" */
    void *priv;
};

static inline int ms_source_start(ms_page_source *s) { return s->ops->start(s); }
static inline int ms_source_dirty(ms_page_source *s, uint64_t *bm) { return s->ops->dirty(s, bm); }
static inline int ms_source_read(ms_page_source *s, const uint64_t *idx, size_t n, uint8_t *out)
{
    return s->ops->read(s, idx, n, out);
}
static inline int ms_source_pause(ms_page_source *s) { return s->ops->pause ? s->ops->pause(s) : MS_OK; }
static inline int ms_source_resume(ms_page_source *s) { return s->ops->resume ? s->ops->resume(s) : MS_OK; }
static inline void ms_source_destroy(ms_page_source *s) { if (s) s->ops->destroy(s); }

/* Bitmap helpers (64-bit words, bit i of word i/64). */
static inline size_t ms_bitmap_words(uint64_t nbits) { return (size_t)((nbits + 63) / 64); }
static inline void ms_bit_set(uint64_t *bm, uint64_t i) { bm[i / 64] |= 1ull << (i % 64); }
static inline bool ms_bit_test(const uint64_t *bm, uint64_t i) { return bm[i / 64] >> (i % 64) & 1; }
uint64_t ms_bitmap_count(const uint64_t *bm, uint64_t nbits);

/* The constructors (process, trace, model) are declared below by the
 * module's owner. */

#ifdef __cplusplus
}
#endif
#endif
