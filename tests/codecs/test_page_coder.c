/* The page coder: every chain on every page kind and fragment size, the
 * delta cache (hits, misses, evictions, zero pages), sender and receiver
 * caches in step over many batches, and corrupt page sections. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codecs/codecs.h"
#include "pages.h"
#include "tests/ms_test.h"

#define PS 4096u

static ms_page_coder *coder(uint32_t stages, size_t ps, uint64_t cache_bytes)
{
    ms_page_coder_config cfg = {.stages = stages, .page_size = ps, .delta_cache_bytes = cache_bytes};
    ms_page_coder *pc = ms_page_coder_new(&cfg);
    if (!pc)
        fprintf(stderr, "ms_page_coder_new: %s\n", ms_last_error());
    CU_ASSERT_PTR_NOT_NULL_FATAL(pc);
    return pc;
}

/* Bytes to configure so the delta cache holds exactly `pages` pages: found
 * by asking, not by knowing the bookkeeping size. */
static uint64_t bytes_for_pages(uint32_t stages, size_t ps, uint64_t pages)
{
    uint64_t lo = 1, hi = (pages + 2) * (ps + 4096) + 65536;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        ms_page_coder *pc = coder(stages, ps, mid);
        uint64_t cap = ms_page_coder_cache_capacity(pc);
        ms_page_coder_free(pc);
        if (cap >= pages)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

typedef struct pair {
    ms_page_coder *enc, *dec;
    ms_codec_ctx *ctx;
    ms_chain chain;
    ms_buf section;
    uint8_t *comp, *dec_buf;
    size_t ps, max_pages;
    ms_stage_stats est, dst;
} pair;

static ms_page_coder *coder_cfg(const ms_page_coder_config *cfg)
{
    ms_page_coder *pc = ms_page_coder_new(cfg);
    if (!pc)
        fprintf(stderr, "ms_page_coder_new: %s\n", ms_last_error());
    CU_ASSERT_PTR_NOT_NULL_FATAL(pc);
    return pc;
}

/* cache_bytes: the whole page store, whichever stages share it. */
static void pair_open_bits(pair *p, const char *chain, size_t ps, uint64_t cache_bytes, size_t max_pages,
                           unsigned hash_bits)
{
    memset(p, 0, sizeof *p);
    CU_ASSERT_EQUAL_FATAL(ms_chain_parse(chain, &p->chain), MS_OK);
    uint32_t st = p->chain.stages;
    ms_page_coder_config cfg = {.stages = st, .page_size = ps, .dedup_hash_bits = hash_bits};
    if (cache_bytes && (st & MS_STAGE_DELTA) && (st & MS_STAGE_DEDUP))
        cfg.delta_cache_bytes = cfg.dedup_bytes = cache_bytes / 2;
    else if (cache_bytes)
        cfg.delta_cache_bytes = cfg.dedup_bytes = cache_bytes;
    p->enc = coder_cfg(&cfg);
    p->dec = coder_cfg(&cfg);
    p->ctx = ms_codec_ctx_new();
    p->ps = ps;
    p->max_pages = max_pages;
    size_t bound = ms_page_section_bound(p->chain.stages, ps, max_pages);
    p->comp = malloc(ms_compress_bound(&p->chain, bound));
    p->dec_buf = malloc(bound);
}

static void pair_open(pair *p, const char *chain, size_t ps, uint64_t cache_bytes, size_t max_pages)
{
    pair_open_bits(p, chain, ps, cache_bytes, max_pages, 0);
}

static void pair_close(pair *p)
{
    ms_page_coder_free(p->enc);
    ms_page_coder_free(p->dec);
    ms_codec_ctx_free(p->ctx);
    ms_buf_free(&p->section);
    free(p->comp);
    free(p->dec_buf);
}

/* Send one batch through the whole chain and back, alternating between the
 * copying and the in-place decoder; the pages must come back unchanged. */
static void pair_send(pair *p, const uint64_t *pfns, const uint8_t *pages, size_t count, bool inplace)
{
    size_t bound = ms_page_section_bound(p->chain.stages, p->ps, count), clen;
    p->section.len = 0;
    CU_ASSERT_EQUAL_FATAL(ms_page_coder_encode(p->enc, pfns, pages, count, &p->section, &p->est), MS_OK);
    CU_ASSERT_FATAL(p->section.len <= bound);
    size_t slen = p->section.len;
    CU_ASSERT_EQUAL_FATAL(ms_compress(p->ctx, &p->chain, p->section.data, slen, p->comp,
                                      ms_compress_bound(&p->chain, slen), &clen), MS_OK);
    CU_ASSERT_EQUAL_FATAL(ms_decompress(p->ctx, &p->chain, p->comp, clen, p->dec_buf, slen), MS_OK);
    int rc;
    if (inplace) {
        rc = ms_page_coder_decode_inplace(p->dec, pfns, count, p->dec_buf, slen, bound, &p->dst);
    } else {
        uint8_t *out = malloc(count * p->ps + 1);
        rc = ms_page_coder_decode(p->dec, pfns, count, p->dec_buf, slen, out, &p->dst);
        if (!rc)
            memcpy(p->dec_buf, out, count * p->ps);
        free(out);
    }
    if (rc)
        fprintf(stderr, "decode: %s\n", ms_last_error());
    CU_ASSERT_EQUAL_FATAL(rc, MS_OK);
    CU_ASSERT_FATAL(memcmp(p->dec_buf, pages, count * p->ps) == 0);
    CU_ASSERT_EQUAL(ms_page_coder_cache_bytes(p->enc), ms_page_coder_cache_bytes(p->dec));
}

static const char *const all_chains[] = {
    "none", "zero", "delta", "zero,delta", "lz4", "lz4:17", "zero,lz4", "delta,lz4", "zero,delta,lz4",
    "zstd:1", "zero,zstd:1", "zero,delta,zstd:1", "zero,delta,zstd:3", "dedup", "zero,dedup,lz4",
    "dedup,delta,zstd:1", "zero,dedup,delta,lz4",
};
#define NCHAINS (sizeof all_chains / sizeof all_chains[0])

/* Every chain, every page kind alone and mixed, fragment sizes from 1 to
 * 1024, sent twice (the second time modified, so delta has hits). */
static void test_round_trip_all(void)
{
    static const size_t sizes[] = {1, 2, 3, 5, 16, 63, 256, 511, 1024};
    uint64_t rs = 1;
    uint8_t *pages = malloc(1024 * PS);
    uint64_t *pfns = malloc(1024 * sizeof *pfns);
    for (size_t c = 0; c < NCHAINS; c++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t count = sizes[s];
            for (int kind = 0; kind <= TK_COUNT; kind++) { /* TK_COUNT: mixed */
                if (count >= 256 && kind < TK_COUNT && c % 3)
                    continue; /* large single-kind batches: a third of the chains suffice */
                pair p;
                pair_open(&p, all_chains[c], PS, 0, count);
                for (size_t i = 0; i < count; i++) {
                    pfns[i] = 1000 + i * 3;
                    t_fill(pages + i * PS, PS, kind == TK_COUNT ? (enum test_kind)(t_rand(&rs) % TK_COUNT)
                                                              : (enum test_kind)kind, &rs);
                }
                pair_send(&p, pfns, pages, count, s % 2);
                for (size_t i = 0; i < count; i++)
                    if (i % 2 == 0)
                        t_mutate(pages + i * PS, PS, 0.05, &rs);
                pair_send(&p, pfns, pages, count, s % 2 == 0);
                CU_ASSERT_EQUAL(p.est.pages, 2 * count);
                if ((p.chain.stages & MS_STAGE_DELTA) && kind != TK_ZERO && kind != TK_COUNT)
                    CU_ASSERT(p.est.delta >= (count + 1) / 2);
                if (!(p.chain.stages & MS_STAGE_ZERO))
                    CU_ASSERT_EQUAL(p.est.zero, 0);
                if (kind == TK_ZERO && (p.chain.stages & MS_STAGE_ZERO))
                    CU_ASSERT_EQUAL(p.est.zero, 2 * count - (count + 1) / 2);
                CU_ASSERT_EQUAL(p.est.zero, p.dst.zero);
                CU_ASSERT_EQUAL(p.est.delta, p.dst.delta);
                CU_ASSERT_EQUAL(p.est.raw, p.dst.raw);
                pair_close(&p);
            }
        }
    }
    free(pages);
    free(pfns);
}

/* Hits, misses, LRU evictions and zero pages dropping entries, with a cache
 * of exactly four pages. */
static void test_cache_rules(void)
{
    uint64_t rs = 5;
    uint32_t st = MS_STAGE_ZERO | MS_STAGE_DELTA;
    uint64_t bytes = bytes_for_pages(st, PS, 4);
    pair p;
    pair_open(&p, "zero,delta,lz4", PS, bytes, 8);
    CU_ASSERT_EQUAL(ms_page_coder_cache_capacity(p.enc), 4);
    uint8_t *pg = malloc(8 * PS);
    uint64_t pfn[8];
    for (int i = 0; i < 8; i++)
        t_fill(pg + i * PS, PS, TK_POINTERS, &rs);
    /* 0..4: five misses; the fifth evicts pfn 0, the least recently sent. */
    for (int i = 0; i < 5; i++)
        pfn[i] = (uint64_t)i;
    pair_send(&p, pfn, pg, 5, true);
    CU_ASSERT_EQUAL(p.est.delta_miss, 5);
    CU_ASSERT(ms_page_coder_cache_bytes(p.enc) <= bytes);
    /* pfn 1 again, changed: a hit; it becomes the most recent. */
    ms_stage_stats before = p.est;
    t_mutate(pg + 1 * PS, PS, 0.05, &rs);
    pair_send(&p, &pfn[1], pg + 1 * PS, 1, false);
    CU_ASSERT_EQUAL(p.est.delta - before.delta, 1);
    /* pfn 0 was evicted: a miss, which evicts pfn 2 (LRU is now 2,3,4,1). */
    before = p.est;
    t_mutate(pg, PS, 0.05, &rs);
    pair_send(&p, &pfn[0], pg, 1, true);
    CU_ASSERT_EQUAL(p.est.delta_miss - before.delta_miss, 1);
    before = p.est;
    t_mutate(pg + 2 * PS, PS, 0.05, &rs);
    pair_send(&p, &pfn[2], pg + 2 * PS, 1, true);
    CU_ASSERT_EQUAL(p.est.delta_miss - before.delta_miss, 1); /* evicted: miss; evicts 3 */
    before = p.est;
    t_mutate(pg + 4 * PS, PS, 0.05, &rs);
    pair_send(&p, &pfn[4], pg + 4 * PS, 1, false);
    CU_ASSERT_EQUAL(p.est.delta - before.delta, 1); /* 4 still cached */
    before = p.est;
    t_mutate(pg + 3 * PS, PS, 0.05, &rs);
    pair_send(&p, &pfn[3], pg + 3 * PS, 1, false);
    CU_ASSERT_EQUAL(p.est.delta_miss - before.delta_miss, 1);
    /* A zero page drops its pfn: sent again non-zero, it is a miss. */
    before = p.est;
    memset(pg + 4 * PS, 0, PS);
    pair_send(&p, &pfn[4], pg + 4 * PS, 1, true);
    CU_ASSERT_EQUAL(p.est.zero - before.zero, 1);
    t_fill(pg + 4 * PS, PS, TK_TEXT, &rs);
    pair_send(&p, &pfn[4], pg + 4 * PS, 1, true);
    CU_ASSERT_EQUAL(p.est.delta_miss - before.delta_miss, 1);
    /* A completely different page: cached, but the delta does not pay. */
    before = p.est;
    t_fill(pg + 4 * PS, PS, TK_RANDOM, &rs);
    pair_send(&p, &pfn[4], pg + 4 * PS, 1, false);
    CU_ASSERT_EQUAL(p.est.delta_nogain - before.delta_nogain, 1);
    CU_ASSERT_EQUAL(p.est.raw - before.raw, 1);
    /* An unchanged page costs a few bytes. */
    before = p.est;
    pair_send(&p, &pfn[4], pg + 4 * PS, 1, true);
    CU_ASSERT_EQUAL(p.est.delta - before.delta, 1);
    CU_ASSERT(p.est.out_bytes - before.out_bytes <= 5);
    CU_ASSERT(ms_page_coder_cache_bytes(p.enc) <= bytes);
    free(pg);
    pair_close(&p);
    /* Without the delta stage there is no cache at all. */
    ms_page_coder *z = coder(MS_STAGE_ZERO, PS, 0);
    CU_ASSERT_EQUAL(ms_page_coder_cache_capacity(z), 0);
    CU_ASSERT_EQUAL(ms_page_coder_cache_bytes(z), 0);
    ms_page_coder_free(z);
    /* The default bound is 64 MiB, and the cache stays inside it. */
    z = coder(MS_STAGE_DELTA, PS, 0);
    CU_ASSERT(ms_page_coder_cache_capacity(z) * PS <= (64u << 20));
    CU_ASSERT(ms_page_coder_cache_capacity(z) * PS >= (63u << 20));
    ms_page_coder_free(z);
}

/* Many batches of random pfns from a pool larger than the cache: any
 * divergence between the caches would show as a DELTA the decoder cannot
 * apply or as wrong pages. */
static void test_caches_in_step(void)
{
    uint64_t rs = 77;
    const size_t ps = 512, pool = 96;
    uint64_t bytes = bytes_for_pages(MS_STAGE_ZERO | MS_STAGE_DELTA, ps, 24);
    uint8_t *mem = malloc(pool * ps), *batch = malloc(pool * ps);
    uint64_t pfns[96];
    for (size_t i = 0; i < pool; i++)
        t_fill(mem + i * ps, ps, (enum test_kind)(t_rand(&rs) % TK_COUNT), &rs);
    const char *chains[] = {"zero,delta,lz4", "delta,none", "zero,delta,zstd:1", "zero,dedup,delta,lz4"};
    for (size_t c = 0; c < 4; c++) {
        pair p;
        pair_open(&p, chains[c], ps, bytes, pool);
        for (int b = 0; b < 400; b++) {
            /* Distinct pfns in random order, some pages changed first. */
            size_t count = 1 + t_rand(&rs) % 40, n = 0;
            bool used[96] = {false};
            while (n < count) {
                size_t i = t_rand(&rs) % pool;
                if (used[i])
                    continue;
                used[i] = true;
                switch (t_rand(&rs) % 6) {
                case 0: t_mutate(mem + i * ps, ps, 0.05, &rs); break;
                case 1: t_fill(mem + i * ps, ps, (enum test_kind)(t_rand(&rs) % TK_COUNT), &rs); break;
                default: break;
                }
                pfns[n] = i;
                memcpy(batch + n * ps, mem + i * ps, ps);
                n++;
            }
            pair_send(&p, pfns, batch, count, b % 3 != 0);
            CU_ASSERT(ms_page_coder_cache_bytes(p.enc) <= bytes);
        }
        CU_ASSERT(p.est.delta > 100);
        CU_ASSERT(p.est.delta_miss > 100); /* evictions happened */
        CU_ASSERT_EQUAL(p.est.delta, p.dst.delta);
        pair_close(&p);
    }
    free(mem);
    free(batch);
}

/* ---- dedup --------------------------------------------------------------- */

/* Sends through `p` and returns how many pages went as DUP. */
static uint64_t send_dups(pair *p, const uint64_t *pfns, const uint8_t *pages, size_t count, bool inplace)
{
    uint64_t before = p->est.dup;
    pair_send(p, pfns, pages, count, inplace);
    CU_ASSERT_EQUAL(p->est.dup, p->dst.dup);
    return p->est.dup - before;
}

static void test_dedup_references(void)
{
    uint64_t rs = 31;
    const char *chains[] = {"zero,dedup,lz4", "zero,dedup,delta,zstd:1", "dedup,none"};
    uint8_t *pg = malloc(16 * PS), *a = malloc(PS), *b = malloc(PS);
    uint64_t pfn[16];
    for (size_t c = 0; c < 3; c++) {
        for (int inplace = 0; inplace < 2; inplace++) {
            pair p;
            pair_open(&p, chains[c], PS, 0, 16);
            t_fill(a, PS, TK_TEXT, &rs);
            t_fill(b, PS, TK_POINTERS, &rs);
            /* Within one section: pages 1, 3 and 4 repeat page 0; 5 repeats 2. */
            for (int i = 0; i < 6; i++)
                pfn[i] = 100 + (uint64_t)i;
            memcpy(pg + 0 * PS, a, PS);
            t_fill(pg + 2 * PS, PS, TK_RANDOM, &rs);
            memcpy(pg + 1 * PS, a, PS);
            memcpy(pg + 3 * PS, a, PS);
            memcpy(pg + 4 * PS, a, PS);
            memcpy(pg + 5 * PS, pg + 2 * PS, PS);
            CU_ASSERT_EQUAL(send_dups(&p, pfn, pg, 6, inplace), 4);
            /* Across sections: other pfns with the same contents. */
            for (int i = 0; i < 3; i++)
                pfn[i] = 900 + (uint64_t)i * 1000;
            memcpy(pg + 0 * PS, pg + 5 * PS, PS);
            memcpy(pg + 1 * PS, a, PS);
            memcpy(pg + 2 * PS, b, PS);
            CU_ASSERT_EQUAL(send_dups(&p, pfn, pg, 3, inplace), 2);
            /* A content overwritten in a later section is no longer offered:
             * every pfn that held `a` gets new contents first. */
            uint64_t holders[] = {100, 101, 103, 104, 1900};
            for (int i = 0; i < 5; i++) {
                pfn[i] = holders[i];
                t_fill(pg + i * PS, PS, TK_POINTERS, &rs);
            }
            send_dups(&p, pfn, pg, 5, inplace);
            pfn[0] = 5000;
            memcpy(pg, a, PS);
            CU_ASSERT_EQUAL(send_dups(&p, pfn, pg, 1, inplace), 0);
            /* A page overwritten in the same section as a reference to its
             * old content: the reference is to the version before the
             * section, in either order. */
            pfn[0] = 5000;           /* now holds a */
            pfn[1] = 7000;           /* new page with a's content: DUP of 5000 */
            t_fill(pg, PS, TK_TEXT, &rs); /* 5000 gets new content */
            memcpy(pg + PS, a, PS);
            CU_ASSERT_EQUAL(send_dups(&p, pfn, pg, 2, inplace), 1);
            /* Without delta, 7000 kept no copy of a duplicate (and 5000 no
             * longer holds a): send a to 7000 again so that it holds it. */
            pfn[0] = 7000;
            memcpy(pg, a, PS);
            send_dups(&p, pfn, pg, 1, inplace);
            pfn[0] = 7001;           /* reference first ... */
            pfn[1] = 7000;           /* ... then 7000 (holding a) overwritten */
            memcpy(pg, a, PS);
            t_fill(pg + PS, PS, TK_NEARLY_ZERO, &rs);
            CU_ASSERT_EQUAL(send_dups(&p, pfn, pg, 2, inplace), 1);
            CU_ASSERT_EQUAL(ms_page_coder_cache_bytes(p.enc), ms_page_coder_cache_bytes(p.dec));
            pair_close(&p);
        }
    }
    free(pg);
    free(a);
    free(b);
}

/* The smallest budget per stage (dedup_bytes and delta_cache_bytes alike)
 * whose page store holds `pages` pages. */
static uint64_t store_budget(uint32_t stages, uint64_t pages)
{
    uint64_t lo = 1, hi = 1 << 20;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        ms_page_coder_config cfg = {.stages = stages, .page_size = PS, .dedup_bytes = mid,
                                    .delta_cache_bytes = mid};
        ms_page_coder *pc = coder_cfg(&cfg);
        if (ms_page_coder_cache_capacity(pc) >= pages)
            hi = mid;
        else
            lo = mid + 1;
        ms_page_coder_free(pc);
    }
    return lo;
}

/* A store of four pages: a content evicted on both sides is never
 * referenced. */
static void test_dedup_eviction(void)
{
    uint64_t rs = 8;
    uint64_t bytes = store_budget(MS_STAGE_DEDUP, 4);
    pair p;
    pair_open(&p, "dedup,lz4", PS, bytes, 8);
    CU_ASSERT_EQUAL(ms_page_coder_cache_capacity(p.enc), 4);
    uint8_t *pg = malloc(8 * PS);
    uint64_t pfn[8];
    for (int i = 0; i < 5; i++) {
        pfn[i] = (uint64_t)i;
        t_fill(pg + i * PS, PS, TK_TEXT, &rs);
    }
    CU_ASSERT_EQUAL(send_dups(&p, pfn, pg, 5, true), 0); /* pfn 0 evicted */
    uint64_t other = 50;
    CU_ASSERT_EQUAL(send_dups(&p, &other, pg, 1, false), 0);       /* content of 0: gone */
    other = 51;
    CU_ASSERT_EQUAL(send_dups(&p, &other, pg + 2 * PS, 1, true), 1); /* content of 2: held */
    CU_ASSERT(ms_page_coder_cache_bytes(p.enc) <= bytes);
    free(pg);
    pair_close(&p);
}

/* Without delta a duplicate takes no slot: it drops its pfn's entry and
 * makes the content it matched the most recent. A four-page store keeps
 * reaching the originals however many copies pass; with delta each copy is
 * its pfn's version and takes a slot, evicting the oldest. */
static void test_dedup_copies_take_no_slot(void)
{
    for (int with_delta = 0; with_delta < 2; with_delta++) {
        uint64_t rs = 9;
        uint64_t bytes = store_budget(MS_STAGE_DEDUP | (with_delta ? MS_STAGE_DELTA : 0), 4);
        pair p;
        uint64_t total = with_delta ? 2 * bytes : bytes; /* pair_open splits it between the stages */
        pair_open(&p, with_delta ? "dedup,delta,lz4" : "dedup,lz4", PS, total, 4);
        CU_ASSERT_EQUAL(ms_page_coder_cache_capacity(p.enc), 4);
        uint8_t *pg = malloc(4 * PS), *dup = malloc(PS);
        uint64_t pfn[4] = {0, 1, 2, 3};
        for (int i = 0; i < 4; i++)
            t_fill(pg + i * PS, PS, TK_TEXT, &rs);
        CU_ASSERT_EQUAL(send_dups(&p, pfn, pg, 4, false), 0);
        /* Six copies of page 1's content at new pfns, one section each. */
        memcpy(dup, pg + PS, PS);
        for (uint64_t k = 0; k < 6; k++) {
            uint64_t at = 100 + k;
            CU_ASSERT_EQUAL(send_dups(&p, &at, dup, 1, k % 2), 1);
        }
        /* Page 0's content, the least recent original. */
        uint64_t at = 200;
        CU_ASSERT_EQUAL(send_dups(&p, &at, pg, 1, true), with_delta ? 0 : 1);
        CU_ASSERT(ms_page_coder_cache_bytes(p.enc) <= total);
        free(pg);
        free(dup);
        pair_close(&p);
    }
}

/* The content a duplicate matched becomes the most recent: a four-page
 * dedup store that then takes one new page evicts the next oldest, not the
 * original just referenced. */
static void test_dedup_refresh(void)
{
    uint64_t rs = 10, bytes = store_budget(MS_STAGE_DEDUP, 4);
    pair p;
    pair_open(&p, "dedup,lz4", PS, bytes, 4);
    CU_ASSERT_EQUAL(ms_page_coder_cache_capacity(p.enc), 4);
    uint8_t *pg = malloc(5 * PS);
    uint64_t pfn[4] = {0, 1, 2, 3};
    for (int i = 0; i < 5; i++)
        t_fill(pg + i * PS, PS, TK_TEXT, &rs);
    CU_ASSERT_EQUAL(send_dups(&p, pfn, pg, 4, false), 0);
    uint64_t at = 100;
    CU_ASSERT_EQUAL(send_dups(&p, &at, pg, 1, true), 1);     /* c0 again: pfn 0 refreshed */
    at = 4;
    CU_ASSERT_EQUAL(send_dups(&p, &at, pg + 4 * PS, 1, false), 0); /* new: evicts pfn 1 */
    at = 200;
    CU_ASSERT_EQUAL(send_dups(&p, &at, pg, 1, true), 1);     /* c0 still held */
    at = 201;
    CU_ASSERT_EQUAL(send_dups(&p, &at, pg + PS, 1, false), 0); /* c1 gone */
    free(pg);
    pair_close(&p);
}

/* A hash of two bits collides all the time: byte compares keep every
 * reference right, and real duplicates are still found. */
static void test_dedup_weak_hash(void)
{
    uint64_t rs = 12;
    const size_t n = 64;
    uint8_t *pg = malloc(n * PS), *pool = malloc(8 * PS);
    uint64_t *pfn = malloc(n * sizeof *pfn);
    for (int k = 0; k < 8; k++)
        t_fill(pool + k * PS, PS, (enum test_kind)(1 + k % 4), &rs);
    pair p;
    pair_open_bits(&p, "zero,dedup,delta,lz4", PS, 0, n, 2);
    uint64_t dups = 0;
    for (int round = 0; round < 30; round++) {
        for (size_t i = 0; i < n; i++) {
            pfn[i] = (uint64_t)(round * 7 + (int)i * 13) % 4096;
            if (t_rand(&rs) % 2)
                memcpy(pg + i * PS, pool + (t_rand(&rs) % 8) * PS, PS);
            else
                t_fill(pg + i * PS, PS, (enum test_kind)(t_rand(&rs) % TK_COUNT), &rs);
        }
        /* pfns of one call must be distinct */
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (pfn[j] == pfn[i])
                    pfn[i] = 10000 + i + (uint64_t)round * n;
        dups += send_dups(&p, pfn, pg, n, round % 2);
    }
    CU_ASSERT(dups > 100);
    pair_close(&p);
    free(pg);
    free(pool);
    free(pfn);
}

/* ---- corrupt sections ---------------------------------------------------- */

#define CPS 256u /* small pages keep the flip-every-byte loops quick */

typedef struct fixture {
    uint64_t pfns[8];
    uint8_t setup[8 * CPS];   /* first versions, sent to fill the caches */
    uint8_t pages[8 * CPS];   /* second versions: RAW, ZERO and DELTA pages */
    ms_buf setup_sec, sec;
} fixture;

static void fixture_make(fixture *f, ms_page_coder *enc)
{
    uint64_t rs = 1234;
    memset(f, 0, sizeof *f);
    for (int i = 0; i < 8; i++) {
        f->pfns[i] = 0x100 + (uint64_t)i * 7;
        t_fill(f->setup + i * CPS, CPS, i == 2 ? TK_TEXT : TK_POINTERS, &rs);
    }
    memcpy(f->pages, f->setup, sizeof f->pages);
    for (int i = 0; i < 8; i++) {
        uint8_t *pg = f->pages + i * CPS;
        if (i == 1 || i == 5)
            memset(pg, 0, CPS);                     /* ZERO */
        else if (i == 3)
            t_fill(pg, CPS, TK_RANDOM, &rs);        /* RAW (delta does not pay) */
        else
            t_mutate(pg, CPS, 0.03, &rs);           /* DELTA */
    }
    CU_ASSERT_EQUAL_FATAL(ms_page_coder_encode(enc, f->pfns, f->setup, 8, &f->setup_sec, NULL), MS_OK);
    ms_stage_stats st = {0};
    CU_ASSERT_EQUAL_FATAL(ms_page_coder_encode(enc, f->pfns, f->pages, 8, &f->sec, &st), MS_OK);
    CU_ASSERT_EQUAL(st.zero, 2);
    CU_ASSERT_EQUAL(st.delta, 5);
    CU_ASSERT_EQUAL(st.raw, 1);
}

/* A decoder that has seen the setup section, as the receiver would have. */
static ms_page_coder *primed(fixture *f, uint64_t bytes)
{
    ms_page_coder *dec = coder(MS_STAGE_ZERO | MS_STAGE_DELTA, CPS, bytes);
    uint8_t out[8 * CPS];
    CU_ASSERT_EQUAL_FATAL(ms_page_coder_decode(dec, f->pfns, 8, f->setup_sec.data, f->setup_sec.len, out, NULL),
                          MS_OK);
    return dec;
}

/* After a refused section the decoder must be exactly as before: the valid
 * section still decodes, and the next one after it too. */
static void check_unchanged(ms_page_coder *dec, fixture *f)
{
    uint8_t out[8 * CPS];
    int rc = ms_page_coder_decode(dec, f->pfns, 8, f->sec.data, f->sec.len, out, NULL);
    if (rc)
        fprintf(stderr, "valid section refused after a corrupt one: %s\n", ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_OK);
    CU_ASSERT(memcmp(out, f->pages, sizeof out) == 0);
}

static void test_corrupt_flips(void)
{
    uint64_t bytes = bytes_for_pages(MS_STAGE_ZERO | MS_STAGE_DELTA, CPS, 64);
    ms_page_coder *enc = coder(MS_STAGE_ZERO | MS_STAGE_DELTA, CPS, bytes);
    fixture f;
    fixture_make(&f, enc);
    size_t n = f.sec.len, refused = 0, accepted = 0;
    uint8_t *bad = malloc(n), out[8 * CPS], *inpl = malloc(8 * CPS + 64);
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(bad, f.sec.data, n);
            bad[i] ^= (uint8_t)(1 << bit);
            ms_page_coder *dec = primed(&f, bytes);
            int rc = ms_page_coder_decode(dec, f.pfns, 8, bad, n, out, NULL);
            CU_ASSERT(rc == MS_OK || rc == MS_ERR_CORRUPT);
            if (rc) {
                refused++;
                CU_ASSERT(ms_last_error()[0] != 0);
                check_unchanged(dec, &f);
            } else {
                accepted++;
            }
            ms_page_coder_free(dec);
            /* The in-place decoder gives the same verdict. */
            dec = primed(&f, bytes);
            memcpy(inpl, bad, n);
            CU_ASSERT_EQUAL(ms_page_coder_decode_inplace(dec, f.pfns, 8, inpl, n, 8 * CPS + 64, NULL), rc);
            if (rc)
                check_unchanged(dec, &f);
            else
                CU_ASSERT(memcmp(inpl, out, 8 * CPS) == 0);
            ms_page_coder_free(dec);
        }
    }
    /* Flips in raw payloads and literals stay valid (the frame hash catches
     * them); flips in tags and lengths are refused. */
    CU_ASSERT(refused > 8 * 8);
    CU_ASSERT(accepted > 0);
    free(bad);
    free(inpl);
    ms_buf_free(&f.sec);
    ms_buf_free(&f.setup_sec);
    ms_page_coder_free(enc);
}

static void test_corrupt_truncations(void)
{
    uint64_t bytes = bytes_for_pages(MS_STAGE_ZERO | MS_STAGE_DELTA, CPS, 64);
    ms_page_coder *enc = coder(MS_STAGE_ZERO | MS_STAGE_DELTA, CPS, bytes);
    fixture f;
    fixture_make(&f, enc);
    ms_page_coder *dec = primed(&f, bytes);
    uint8_t out[8 * CPS];
    for (size_t len = 0; len < f.sec.len; len++) {
        uint8_t *t = malloc(len ? len : 1); /* exact size: ASan sees overreads */
        memcpy(t, f.sec.data, len);
        int rc = ms_page_coder_decode(dec, f.pfns, 8, t, len, out, NULL);
        if (rc != MS_ERR_CORRUPT)
            fprintf(stderr, "truncation to %zu of %zu: rc %d\n", len, f.sec.len, rc);
        CU_ASSERT_EQUAL(rc, MS_ERR_CORRUPT);
        free(t);
    }
    /* Extra bytes, before the tags or after them, are refused too. */
    ms_buf longer = {0};
    ms_buf_append(&longer, f.sec.data, f.sec.len - 8);
    ms_buf_append(&longer, "\0", 1);
    ms_buf_append(&longer, f.sec.data + f.sec.len - 8, 8);
    CU_ASSERT_EQUAL(ms_page_coder_decode(dec, f.pfns, 8, longer.data, longer.len, out, NULL), MS_ERR_CORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "1 bytes after the last payload"));
    ms_buf_append(&longer, "\0", 1);
    CU_ASSERT_EQUAL(ms_page_coder_decode(dec, f.pfns, 8, longer.data, longer.len, out, NULL), MS_ERR_CORRUPT);
    check_unchanged(dec, &f);
    ms_buf_free(&longer);
    ms_page_coder_free(dec);
    ms_buf_free(&f.sec);
    ms_buf_free(&f.setup_sec);
    ms_page_coder_free(enc);
}

static void expect_corrupt(ms_page_coder *dec, const uint64_t *pfns, size_t count, const uint8_t *in,
                           size_t len, const char *needle)
{
    uint8_t out[4 * CPS];
    ms_clear_error();
    CU_ASSERT_EQUAL(ms_page_coder_decode(dec, pfns, count, in, len, out, NULL), MS_ERR_CORRUPT);
    if (!strstr(ms_last_error(), needle)) {
        fprintf(stderr, "section: \"%s\" lacks \"%s\"\n", ms_last_error(), needle);
        CU_FAIL("section error message");
    }
}

/* Hand-made sections: each defect refused with a message naming it. */
static void test_corrupt_crafted(void)
{
    ms_page_coder *dec = coder(MS_STAGE_ZERO | MS_STAGE_DELTA, CPS, 0);
    ms_page_coder *plain = coder(0, CPS, 0);
    ms_page_coder *zonly = coder(MS_STAGE_ZERO, CPS, 0);
    uint64_t pfns[4] = {0x10, 0x11, 0x12, 0x13};
    uint8_t sec[4 * CPS + 64];
    /* DELTA for a pfn never sent. */
    uint8_t d1[] = {3, 0x80, 0x02, 0, MS_TAG_DELTA};
    expect_corrupt(dec, pfns, 1, d1, sizeof d1, "page 0 (pfn 0x10): DELTA but no cached version");
    /* Once pfn 0x10 was sent, the same DELTA is fine. */
    uint8_t out[4 * CPS];
    memset(sec, 0x42, CPS);
    sec[CPS] = MS_TAG_RAW;
    CU_ASSERT_EQUAL_FATAL(ms_page_coder_decode(dec, pfns, 1, sec, CPS + 1, out, NULL), MS_OK);
    CU_ASSERT_EQUAL(ms_page_coder_decode(dec, pfns, 1, d1, sizeof d1, out, NULL), MS_OK);
    CU_ASSERT(out[0] == 0x42 && out[CPS - 1] == 0x42);
    /* Unknown tag. */
    uint8_t t1[] = {MS_TAG_ZERO, 7};
    expect_corrupt(dec, pfns, 2, t1, sizeof t1, "page 1 (pfn 0x11): unknown tag 7");
    /* DUP without the dedup stage. */
    uint8_t t2[] = {MS_TAG_DUP};
    expect_corrupt(dec, pfns, 1, t2, 1, "page 0 (pfn 0x10): DUP tag but the dedup stage is off");
    ms_page_coder *dd = coder(MS_STAGE_ZERO | MS_STAGE_DEDUP, CPS, 0);
    uint8_t r1[] = {0x05, MS_TAG_DUP}; /* odd: store, zigzag 2 = +1: pfn 0x11, never sent */
    expect_corrupt(dd, pfns, 1, r1, sizeof r1, "page 0 (pfn 0x10): DUP of pfn 0x11, which has no stored version");
    uint8_t r2[] = {0x02, MS_TAG_ZERO, MS_TAG_DUP}; /* even: page 1 of the section, from page 1 */
    expect_corrupt(dd, pfns, 2, r2, sizeof r2, "page 1 (pfn 0x11): DUP of page 1 of the section, which is not before it");
    uint8_t r3[] = {0x00, MS_TAG_DUP};
    expect_corrupt(dd, pfns, 1, r3, sizeof r3, "DUP of page 0 of the section, which is not before it");
    uint8_t r4[] = {0x80, MS_TAG_DUP};
    expect_corrupt(dd, pfns, 1, r4, sizeof r4, "bad or truncated DUP reference at section offset 0");
    uint8_t r5[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, MS_TAG_DUP};
    expect_corrupt(dd, pfns, 1, r5, sizeof r5, "which has no stored version");
    uint8_t r6[] = {0x00, 0x00, MS_TAG_ZERO, MS_TAG_DUP}; /* one byte too many */
    expect_corrupt(dd, pfns, 2, r6, sizeof r6, "1 bytes after the last payload");
    uint8_t ok[] = {0x00, MS_TAG_ZERO, MS_TAG_DUP}; /* DUP of page 0 (zero): fine */
    uint8_t two[2 * CPS];
    CU_ASSERT_EQUAL(ms_page_coder_decode(dd, pfns, 2, ok, sizeof ok, two, NULL), MS_OK);
    CU_ASSERT_TRUE(ms_page_is_zero(two, 2 * CPS));
    ms_page_coder_free(dd);
    /* Oversized delta lengths: past the input, not below a page, 2^64-1. */
    uint8_t l1[] = {0xe8, 0x07, 1, 2, 3, MS_TAG_DELTA};
    expect_corrupt(dec, pfns, 1, l1, sizeof l1, "delta length 1000 out of range");
    uint8_t l2[] = {100, 1, 2, 3, MS_TAG_DELTA};
    expect_corrupt(dec, pfns, 1, l2, sizeof l2,
                   "DELTA payload of 100 bytes at section offset 1 runs past the payload end (4)");
    uint8_t l3[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, MS_TAG_DELTA};
    expect_corrupt(dec, pfns, 1, l3, sizeof l3, "delta length 18446744073709551615 out of range");
    uint8_t l4[] = {0xff, 0xff, MS_TAG_DELTA};
    expect_corrupt(dec, pfns, 1, l4, sizeof l4, "bad or truncated delta length at section offset 0");
    uint8_t l5[] = {0, MS_TAG_DELTA};
    expect_corrupt(dec, pfns, 1, l5, sizeof l5, "delta length 0 out of range");
    /* Raw payload shorter than a page. */
    memset(sec, 0x11, sizeof sec);
    sec[CPS - 1] = MS_TAG_RAW;
    expect_corrupt(dec, pfns, 1, sec, CPS, "RAW payload of 256 bytes at section offset 0 runs past the payload end (255)");
    /* Trailing bytes after the payloads. */
    sec[CPS] = 0xaa;
    sec[CPS + 1] = MS_TAG_RAW;
    expect_corrupt(dec, pfns, 1, sec, CPS + 2, "1 bytes after the last payload");
    /* Fewer bytes than tags, and bytes with no pages. */
    expect_corrupt(dec, pfns, 4, sec, 3, "shorter than its 4 tags");
    expect_corrupt(dec, pfns, 0, sec, 3, "for no pages");
    /* Tags of stages that are off. */
    uint8_t z1[] = {MS_TAG_ZERO};
    expect_corrupt(zonly, pfns, 1, (const uint8_t[]){MS_TAG_DELTA}, 1, "delta stage is off");
    expect_corrupt(dec, pfns, 1, (const uint8_t[]){MS_TAG_ZERO}, 0, "shorter than its 1 tags");
    ms_page_coder *donly = coder(MS_STAGE_DELTA, CPS, 0);
    expect_corrupt(donly, pfns, 1, z1, 1, "ZERO tag but the zero stage is off");
    memset(sec, 0x17, CPS);
    sec[CPS] = MS_TAG_UNKEPT;
    expect_corrupt(zonly, pfns, 1, sec, CPS + 1, "page 0 (pfn 0x10): UNKEPT tag but neither delta nor dedup keeps pages");
    /* UNKEPT drops the stored version: a DELTA against it is refused. */
    CU_ASSERT_EQUAL(ms_page_coder_decode(dec, pfns, 1, d1, sizeof d1, out, NULL), MS_OK);
    CU_ASSERT_EQUAL(ms_page_coder_decode(dec, pfns, 1, sec, CPS + 1, out, NULL), MS_OK);
    CU_ASSERT(out[0] == 0x17 && out[CPS - 1] == 0x17);
    expect_corrupt(dec, pfns, 1, d1, sizeof d1, "page 0 (pfn 0x10): DELTA but no cached version");
    /* Without stages the section is the pages: any other length is wrong. */
    expect_corrupt(plain, pfns, 2, sec, 2 * CPS + 2, "expected 512 for 2 raw pages");
    CU_ASSERT_EQUAL(ms_page_coder_decode(plain, pfns, 2, sec, 2 * CPS, out, NULL), MS_OK);
    /* Empty batches are fine. */
    CU_ASSERT_EQUAL(ms_page_coder_decode(dec, pfns, 0, sec, 0, out, NULL), MS_OK);
    ms_buf b = {0};
    CU_ASSERT_EQUAL(ms_page_coder_encode(dec, pfns, sec, 0, &b, NULL), MS_OK);
    CU_ASSERT_EQUAL(b.len, 0);
    /* In place needs room for the pages. */
    CU_ASSERT_EQUAL(ms_page_coder_decode_inplace(dec, pfns, 2, sec, 10, 2 * CPS - 1, NULL), MS_ERR_INVAL);
    ms_page_coder_free(dec);
    ms_page_coder_free(plain);
    ms_page_coder_free(zonly);
    ms_page_coder_free(donly);
}

/* ---- the stage gate (sender with auto) ---- */

#define GPS 512u   /* small pages keep the many sections of these tests fast */
#define GPAGES 64u /* pages per section: a gate window is 16 sections */

/* A pair whose encoder gates its stages, as the sender does under auto; the
 * decoder is an ordinary receiver's. */
static void pair_open_gated(pair *p, const char *chain)
{
    pair_open(p, chain, GPS, 0, GPAGES);
    ms_page_coder_free(p->enc);
    ms_page_coder_config cfg = {.stages = p->chain.stages, .page_size = GPS, .gate = true};
    p->enc = coder_cfg(&cfg);
}

/* One section of GPAGES pages at pfns base.., each page made by `fill`. */
typedef void (*gate_fill)(uint8_t *page, size_t i, uint64_t *rs);

static void gate_section(pair *p, uint64_t base, gate_fill fill, uint8_t *pg, uint64_t *rs)
{
    uint64_t pfn[GPAGES];
    for (size_t i = 0; i < GPAGES; i++) {
        pfn[i] = base + i;
        fill(pg + i * GPS, i, rs);
    }
    pair_send(p, pfn, pg, GPAGES, (base / GPAGES) % 2);
}

static void fill_random(uint8_t *page, size_t i, uint64_t *rs)
{
    (void)i;
    t_fill(page, GPS, TK_RANDOM, rs);
}

/* Few bytes change: delta saves almost the whole page. */
static void fill_touch(uint8_t *page, size_t i, uint64_t *rs)
{
    page[(i * 7 + t_rand(rs)) % GPS] ^= 0x5a;
}

/* Resent pages rewritten whole: delta examines them and saves nothing, so
 * the gate passes it over for stretches that grow; once pages change a
 * little again, delta comes back within one longest stretch plus a window,
 * and the ordinary receiver decodes every section meanwhile. */
static void test_gate_delta(void)
{
    uint64_t rs = 77;
    uint8_t *pg = calloc(GPAGES, GPS);
    pair p;
    pair_open_gated(&p, "zero,delta,lz4");
    const unsigned sections = 400;
    for (unsigned k = 0; k < sections; k++)
        gate_section(&p, 0, fill_random, pg, &rs);
    uint64_t pages = (uint64_t)sections * GPAGES;
    CU_ASSERT_EQUAL(p.est.delta, 0);
    /* Examined: the windows that earned the stretches 16, 32, ..., 256. */
    CU_ASSERT(p.est.delta_nogain <= pages / 4);
    CU_ASSERT(p.est.delta_off >= pages * 3 / 4);
    CU_ASSERT_EQUAL(p.est.delta_off + p.est.delta_nogain + p.est.delta_miss, pages);
    /* No other stage wants the pages delta passed: they were not kept. */
    CU_ASSERT_EQUAL(p.est.unkept, p.est.delta_off);
    CU_ASSERT_EQUAL(p.dst.unkept, p.est.unkept);

    ms_stage_stats before = p.est;
    unsigned back = 0;
    for (unsigned k = 0; k < MS_GATE_OFF_MAX + 40; k++) {
        uint64_t d = p.est.delta;
        gate_section(&p, 0, fill_touch, pg, &rs);
        if (!back && p.est.delta > d)
            back = k + 1;
    }
    CU_ASSERT(back > 0 && back <= MS_GATE_OFF_MAX + 1);
    /* On for good: the last sections are all delta. */
    ms_stage_stats mid = p.est;
    for (unsigned k = 0; k < 20; k++)
        gate_section(&p, 0, fill_touch, pg, &rs);
    CU_ASSERT_EQUAL(p.est.delta - mid.delta, 20u * GPAGES);
    CU_ASSERT_EQUAL(p.est.delta_off, mid.delta_off);
    CU_ASSERT(mid.delta_off >= before.delta_off);
    pair_close(&p);
    free(pg);
}

/* One gated section; true if delta was passed over in it. */
static bool gate_off_in(pair *p, gate_fill fill, uint8_t *pg, uint64_t *rs)
{
    uint64_t before = p->est.delta_off;
    gate_section(p, 0, fill, pg, rs);
    return p->est.delta_off > before;
}

/* A trial that pays resets the stretch: after stretches have grown on
 * rewritten pages, a spell where delta pays, then rewritten pages again:
 * the next stretch off is the shortest again, not the longest. */
static void test_gate_backoff_resets(void)
{
    uint64_t rs = 80;
    uint8_t *pg = calloc(GPAGES, GPS);
    pair p;
    pair_open_gated(&p, "zero,delta,lz4");
    for (unsigned k = 0; k < 400; k++) /* stretches 16, 32, 64, 128 */
        gate_section(&p, 0, fill_random, pg, &rs);
    unsigned on_run = 0;
    for (unsigned k = 0; k < 2000 && on_run < 40; k++)
        on_run = gate_off_in(&p, fill_touch, pg, &rs) ? 0 : on_run + 1;
    CU_ASSERT_EQUAL_FATAL(on_run, 40);
    unsigned k = 0, off_run = 0;
    while (k++ < 200 && !gate_off_in(&p, fill_random, pg, &rs))
        ;
    for (off_run = 1; off_run < 1000 && gate_off_in(&p, fill_random, pg, &rs); off_run++)
        ;
    CU_ASSERT_EQUAL(off_run, MS_GATE_OFF_MIN);
    pair_close(&p);
    free(pg);
}

/* Dedup is never gated: after 200 sections of unique pages, in which it
 * found nothing, it still finds the latest contents at other pfns; delta,
 * gated meanwhile, left every page kept because dedup may want it. */
static void test_gate_keeps_dedup(void)
{
    uint64_t rs = 78;
    uint8_t *pg = calloc(GPAGES, GPS);
    pair p;
    pair_open_gated(&p, "zero,dedup,delta,lz4");
    for (unsigned k = 0; k < 200; k++)
        gate_section(&p, 0, fill_random, pg, &rs);
    CU_ASSERT_EQUAL(p.est.dup, 0);
    CU_ASSERT(p.est.delta_off > 0);
    CU_ASSERT_EQUAL(p.est.unkept, 0);
    uint64_t pfn[GPAGES];
    for (size_t i = 0; i < GPAGES; i++)
        pfn[i] = 100000 + i;
    ms_stage_stats mid = p.est;
    pair_send(&p, pfn, pg, GPAGES, false);
    CU_ASSERT_EQUAL(p.est.dup - mid.dup, GPAGES);
    pair_close(&p);
    free(pg);
}

/* Without the gate (every sender but auto's) nothing is ever passed over. */
static void test_gate_off_by_default(void)
{
    uint64_t rs = 79;
    uint8_t *pg = calloc(GPAGES, GPS);
    pair p;
    pair_open(&p, "zero,dedup,delta,lz4", GPS, 0, GPAGES);
    for (unsigned k = 0; k < 100; k++)
        gate_section(&p, 0, fill_random, pg, &rs);
    CU_ASSERT_EQUAL(p.est.delta_off, 0);
    CU_ASSERT_EQUAL(p.est.unkept, 0);
    CU_ASSERT_EQUAL(p.est.delta_nogain, 99u * GPAGES);
    pair_close(&p);
    free(pg);
}

static void test_config(void)
{
    ms_page_coder_config cfg = {.stages = MS_STAGE_ZERO, .page_size = 32};
    CU_ASSERT_PTR_NULL(ms_page_coder_new(&cfg));
    CU_ASSERT_EQUAL(ms_last_code(), MS_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "page size 32"));
    cfg = (ms_page_coder_config){.stages = 0x80};
    CU_ASSERT_PTR_NULL(ms_page_coder_new(&cfg));
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "0x80"));
    cfg = (ms_page_coder_config){.stages = MS_STAGE_DEDUP, .dedup_hash_bits = 65};
    CU_ASSERT_PTR_NULL(ms_page_coder_new(&cfg));
    CU_ASSERT_PTR_NOT_NULL(strstr(ms_last_error(), "dedup_hash_bits 65"));
    /* Each stage brings its share of the page store. */
    cfg = (ms_page_coder_config){.stages = MS_STAGE_DELTA, .delta_cache_bytes = 8 << 20};
    ms_page_coder *a = ms_page_coder_new(&cfg);
    cfg = (ms_page_coder_config){.stages = MS_STAGE_DELTA | MS_STAGE_DEDUP, .delta_cache_bytes = 8 << 20,
                                 .dedup_bytes = 8 << 20};
    ms_page_coder *b = ms_page_coder_new(&cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT(ms_page_coder_cache_capacity(b) > ms_page_coder_cache_capacity(a) * 19 / 10);
    CU_ASSERT(ms_page_coder_cache_capacity(b) * PS < (16u << 20));
    ms_page_coder_free(a);
    ms_page_coder_free(b);
    CU_ASSERT_EQUAL(ms_page_section_bound(0, PS, 10), 10 * PS);
    CU_ASSERT_EQUAL(ms_page_section_bound(MS_STAGE_ZERO, PS, 10), 10 * PS + 10);
    CU_ASSERT_TRUE(ms_page_section_is_identity(0));
    CU_ASSERT_FALSE(ms_page_section_is_identity(MS_STAGE_ZERO));
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"page coder: every chain, page kind, fragment size", test_round_trip_all},
        {"page coder: cache hits, misses, LRU evictions, zero pages", test_cache_rules},
        {"page coder: sender and receiver caches in step", test_caches_in_step},
        {"dedup: within a section, across sections, overwritten targets", test_dedup_references},
        {"dedup: contents evicted on both sides are not referenced", test_dedup_eviction},
        {"dedup: without delta a copy takes no slot", test_dedup_copies_take_no_slot},
        {"dedup: the content matched becomes the most recent", test_dedup_refresh},
        {"dedup: forced hash collisions", test_dedup_weak_hash},
        {"page coder: every byte of a section flipped", test_corrupt_flips},
        {"page coder: every truncation, extra bytes", test_corrupt_truncations},
        {"page coder: crafted defects named precisely", test_corrupt_crafted},
        {"page coder: configuration checks", test_config},
        {"gate: delta passed over while it saves nothing, back when it pays", test_gate_delta},
        {"gate: a trial that pays resets the stretch", test_gate_backoff_resets},
        {"gate: dedup never gated, its pages kept while delta is off", test_gate_keeps_dedup},
        {"gate: off unless asked for", test_gate_off_by_default},
        {NULL, NULL},
    };
    ms_test_add_suite("codecs", cases);
})
