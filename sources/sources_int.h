/* Internals shared by the files of sources/ (not an interface). */
#ifndef MS_SOURCES_INT_H
#define MS_SOURCES_INT_H

#include "sources/sources.h"

static inline uint64_t ms_src_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* splitmix64 stream: fast, seedable, good enough for workload models. */
static inline uint64_t ms_src_next(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ull;
    uint64_t x = *state;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Uniform double in [0, 1). */
static inline double ms_src_unit(uint64_t *state) { return (double)(ms_src_next(state) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n), n > 0 (multiply-shift, negligible bias). */
static inline uint64_t ms_src_below(uint64_t *state, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)ms_src_next(state) * n) >> 64);
}

/* Synthetic page content, deterministic in (seed, page, version): about
 * 30% zero pages, 25% text, 30% pointer-rich structures, 15% random bytes;
 * each version overwrites a few words of the page's base content. */
void ms_src_content(uint64_t seed, uint64_t page, uint64_t version, uint8_t *out, uint32_t page_size);

/* Lazily kept per-page write counters for synthetic content: counting
 * starts at the first read (nobody saw content before it). */
typedef struct ms_src_versions {
    uint32_t *v;
    uint64_t n;
} ms_src_versions;
int ms_src_versions_read(ms_src_versions *vs, uint64_t seed, uint64_t npages, uint32_t page_size,
                         const uint64_t *idx, size_t n, uint8_t *out);
static inline void ms_src_versions_bump(ms_src_versions *vs, uint64_t page)
{
    if (vs->v)
        vs->v[page]++;
}

#endif
