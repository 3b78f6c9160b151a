/* `migstream bench codecs`: every requested codec chain on the same pages,
 * next to the LZ4 / zstd library called directly on those pages in the same
 * run, plus the zero-page check and delta encoder in isolation.
 *
 * Throughputs are per core: raw page bytes divided by the CPU time of the
 * benchmarking thread (CLOCK_THREAD_CPUTIME_ID), so time the hypervisor or
 * other processes take from this thread does not count against either side
 * of a comparison. Each figure is the best of --repeat runs. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "codecs/codecs.h"
#include "common/common.h"
#include "tools/tools.h"

#define PS MS_PAGE_SIZE
#define MAX_CHAINS 32
#define DEFAULT_CHAINS                                                                              \
    "none;zero;lz4;zero,lz4;zero,delta,lz4;zero,dedup,lz4;zero,dedup,delta,lz4;zstd:1;zero,zstd:1;"    \
    "zero,delta,zstd:1;zero,zstd:3"

typedef struct bench_opts {
    const char *image;
    uint64_t size_mib;
    const char *chains;
    uint32_t frame_pages;
    double mutate;       /* fraction of non-zero pages resent modified */
    unsigned rounds;     /* rounds 2..rounds resend those pages, changed again */
    double page_change;  /* fraction of bytes changed in a modified page */
    uint64_t cache_mib;  /* delta's share of the page store */
    uint64_t dedup_mib;  /* dedup's share */
    unsigned repeat;
    uint64_t seed;
    bool json;
} bench_opts;

/* ---- sample data --------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: deterministic for a seed, good enough for test data. */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

enum page_kind { K_ZERO, K_TEXT, K_POINTERS, K_RANDOM, K_SPARSE, K_COPY, K_COUNT };
static const char *const kind_names[K_COUNT] = {"zero", "text", "pointers", "random", "nearly-zero",
                                                "copies"};
/* Shares in percent: about what a running guest holds (much of it zero,
 * code/text and heap structures, some compressed or encrypted data, and
 * copies of other pages: a file in the page cache and in tmpfs). */
static const unsigned kind_share[K_COUNT] = {40, 15, 20, 10, 5, 10};

static void gen_text(uint8_t *p, uint64_t *rs)
{
    static const char *const words[] = {
        "the", "of", "and", "to", "in", "is", "for", "that", "with", "on", "migration", "page",
        "memory", "return", "if", "else", "int", "static", "const", "struct", "void", "error",
        "buffer", "length", "while", "for", "config", "server", "request", "GET", "/index.html",
        "HTTP/1.1", "200", "user", "session", "2024-05-01", "INFO", "DEBUG", "value", "key",
    };
    size_t n = sizeof words / sizeof words[0], i = 0, col = 0;
    while (i < PS) {
        const char *w = words[rng_next(rs) % n];
        size_t l = strlen(w);
        for (size_t k = 0; k < l && i < PS; k++)
            p[i++] = (uint8_t)w[k];
        col += l + 1;
        if (i < PS)
            p[i++] = col > 72 ? '\n' : ' ';
        if (col > 72)
            col = 0;
    }
}

static void gen_pointers(uint8_t *p, uint64_t *rs)
{
    /* 64-byte heap records: links to nearby records, a data pointer, small
     * integers, flags and padding, as in a linked structure in a heap. */
    const uint64_t heap = 0x00005581a0000000ull, mmap = 0x00007f3c12000000ull;
    for (size_t off = 0; off < PS; off += 64) {
        uint64_t r = rng_next(rs);
        uint64_t f[8] = {
            heap + ((r & 0xffffff) << 6),
            heap + (((r >> 24) & 0xffffff) << 6),
            mmap + ((r >> 40) << 4),
            r % 1000,
            (r >> 13) & 0xff000007,
            (r >> 20) % 4096,
            1 + (r >> 50) % 4,
            0,
        };
        for (int k = 0; k < 8; k++)
            ms_put_le64(p + off + 8 * k, f[k]);
    }
}

static void gen_page(uint8_t *p, enum page_kind k, uint64_t *rs)
{
    memset(p, 0, PS);
    switch (k) {
    case K_ZERO:
        break;
    case K_TEXT:
        gen_text(p, rs);
        break;
    case K_POINTERS:
        gen_pointers(p, rs);
        break;
    case K_RANDOM:
        for (size_t i = 0; i < PS; i += 8)
            ms_put_le64(p + i, rng_next(rs));
        break;
    case K_SPARSE:
        for (unsigned n = 1 + rng_next(rs) % 8; n; n--)
            ms_put_le64(p + (rng_next(rs) % (PS / 8)) * 8, rng_next(rs));
        break;
    default:
        break;
    }
}

/* Runs of 1..32 pages of one kind, since memory holds regions, not a
 * shuffle of single pages. */
static void gen_sample(uint8_t *img, size_t npages, uint64_t seed, size_t counts[K_COUNT])
{
    uint64_t rs = seed;
    size_t i = 0;
    while (i < npages) {
        unsigned pick = (unsigned)(rng_next(&rs) % 100), k = 0;
        while (pick >= kind_share[k]) {
            pick -= kind_share[k];
            k++;
        }
        size_t run = 1 + rng_next(&rs) % 32;
        /* Copies: a run of earlier pages, from anywhere before. */
        size_t from = i ? rng_next(&rs) % i : 0;
        if (k == K_COPY && run > i - from)
            run = i - from;
        for (; run && i < npages; run--, i++) {
            if (k == K_COPY)
                memcpy(img + i * PS, img + from++ * PS, PS);
            else
                gen_page(img + i * PS, (enum page_kind)k, &rs);
            counts[k]++;
        }
    }
}

/* Change about `frac` of the bytes of a page, in runs of 1..16 bytes: real
 * writes touch fields and strings, not isolated bytes. */
static void mutate_page(uint8_t *p, double frac, uint64_t *rs)
{
    if (frac >= 1.0) {
        /* Rewritten whole (a buffer refilled, encrypted or compressed data):
         * the case where delta can save nothing. */
        for (size_t i = 0; i < PS; i += 8) {
            uint64_t v = rng_next(rs);
            memcpy(p + i, &v, 8);
        }
        return;
    }
    size_t want = (size_t)(frac * PS), done = 0;
    while (done < want) {
        size_t off = rng_next(rs) % PS, len = 1 + rng_next(rs) % 16;
        for (size_t k = 0; k < len && off + k < PS && done < want; k++, done++)
            p[off + k] ^= (uint8_t)(1 + rng_next(rs) % 255);
    }
}

/* ---- image --------------------------------------------------------------- */

typedef struct bench_data {
    uint8_t *img;      /* round 1: every page */
    size_t npages;
    uint8_t *resent;   /* rounds 2..: the modified pages, packed, round by round */
    uint64_t *resent_pfns;
    size_t nresent;
    unsigned later_rounds; /* rounds after the first that resend pages */
    size_t counts[K_COUNT];
    size_t zero_pages;
} bench_data;

static int load_image(const char *path, bench_data *d)
{
    int rc = MS_OK, fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return ms_error(MS_ERR_IO, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st)) {
        rc = ms_error(MS_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    size_t len = (size_t)st.st_size;
    d->npages = (len + PS - 1) / PS;
    if (!d->npages) {
        rc = ms_error(MS_ERR_INVAL, "%s: empty image", path);
        goto out;
    }
    d->img = calloc(d->npages, PS);
    if (!d->img) {
        rc = ms_error(MS_ERR_NOMEM, "%s: cannot hold %zu bytes in memory", path, len);
        goto out;
    }
    for (size_t got = 0; got < len;) {
        ssize_t n = read(fd, d->img + got, len - got);
        if (n <= 0) {
            rc = ms_error(MS_ERR_IO, "%s: read at offset %zu: %s", path, got,
                          n ? strerror(errno) : "file shrank");
            goto out;
        }
        got += (size_t)n;
    }
out:
    close(fd);
    return rc;
}

static int prepare_data(const bench_opts *o, bench_data *d)
{
    int rc;
    if (o->image) {
        rc = load_image(o->image, d);
        if (rc)
            return rc;
    } else {
        d->npages = (size_t)(o->size_mib << 20) / PS;
        d->img = malloc(d->npages * PS);
        if (!d->img)
            return ms_error(MS_ERR_NOMEM, "cannot allocate a %llu MiB sample",
                            (unsigned long long)o->size_mib);
        gen_sample(d->img, d->npages, o->seed, d->counts);
    }
    uint64_t rs = o->seed ^ 0x5eed;
    size_t cap = (size_t)(o->mutate * (double)d->npages) + 1;
    unsigned later = o->rounds - 1;
    d->resent = malloc(cap * PS * (later ? later : 1));
    d->resent_pfns = malloc(cap * sizeof *d->resent_pfns);
    if (!d->resent || !d->resent_pfns)
        return ms_error(MS_ERR_NOMEM, "cannot allocate the resent pages");
    /* Pick modified pages among the non-zero ones (a page being written is
     * in use), in address order as a dirty bitmap would yield them. */
    for (size_t i = 0; i < d->npages; i++) {
        const uint8_t *p = d->img + i * PS;
        if (ms_page_is_zero(p, PS)) {
            d->zero_pages++;
            continue;
        }
        if (d->nresent >= cap || (double)(rng_next(&rs) >> 11) / 9007199254740992.0 >= o->mutate)
            continue;
        memcpy(d->resent + d->nresent * PS, p, PS);
        mutate_page(d->resent + d->nresent * PS, o->page_change, &rs);
        d->resent_pfns[d->nresent++] = i;
    }
    /* Each later round: the same pages written again (a hot set). */
    for (unsigned r = 1; r < later; r++) {
        uint8_t *prev = d->resent + (r - 1) * d->nresent * PS, *cur = prev + d->nresent * PS;
        memcpy(cur, prev, d->nresent * PS);
        for (size_t i = 0; i < d->nresent; i++)
            mutate_page(cur + i * PS, o->page_change, &rs);
    }
    d->later_rounds = d->nresent ? later : 0;
    return MS_OK;
}

static void free_data(bench_data *d)
{
    free(d->img);
    free(d->resent);
    free(d->resent_pfns);
}

/* ---- measuring ------------------------------------------------------------ */

/* One frame of the replay: `count` pages at `pages` with their pfns. */
typedef struct frame_ref {
    const uint8_t *pages;
    const uint64_t *pfns; /* NULL: consecutive from first_pfn */
    uint64_t first_pfn;
    size_t count;
} frame_ref;

typedef struct run_result {
    double enc_cpu, dec_cpu; /* seconds */
    uint64_t raw, wire;
    uint64_t wire_r2, raw_r2;
    ms_stage_stats st;
    uint64_t cache_peak;      /* largest ms_page_coder_cache_bytes seen (encoder) */
    long rss_growth_kib;      /* resident growth while the coders lived */
    bool mismatch;
} run_result;

typedef struct frame_list {
    frame_ref *f;
    size_t n;
    size_t first_r2; /* index of the first round-2 frame */
} frame_list;

static int build_frames(const bench_data *d, uint32_t fp, frame_list *fl)
{
    size_t n = (d->npages + fp - 1) / fp + d->later_rounds * ((d->nresent + fp - 1) / fp);
    fl->f = calloc(n ? n : 1, sizeof *fl->f);
    if (!fl->f)
        return ms_error(MS_ERR_NOMEM, "cannot allocate the frame list");
    for (size_t i = 0; i < d->npages; i += fp)
        fl->f[fl->n++] = (frame_ref){d->img + i * PS, NULL, i, d->npages - i < fp ? d->npages - i : fp};
    fl->first_r2 = fl->n;
    for (unsigned r = 0; r < d->later_rounds; r++)
        for (size_t i = 0; i < d->nresent; i += fp)
            fl->f[fl->n++] = (frame_ref){d->resent + (r * d->nresent + i) * PS, d->resent_pfns + i, 0,
                                         d->nresent - i < fp ? d->nresent - i : fp};
    return MS_OK;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

typedef struct bench_ctx {
    uint8_t *comp, *dec, *ddec;
    size_t comp_cap, dec_cap;
    uint64_t *pfns;
    ms_buf section;
    ms_codec_ctx *cctx;
    void *lz4_state;
    ZSTD_CCtx *zc;
    ZSTD_DCtx *zd;
} bench_ctx;

static const uint64_t *frame_pfns(const frame_ref *fr, uint64_t *tmp)
{
    if (fr->pfns)
        return fr->pfns;
    for (size_t i = 0; i < fr->count; i++)
        tmp[i] = fr->first_pfn + i;
    return tmp;
}

static void account(run_result *r, const frame_list *fl, size_t k, size_t raw, size_t clen,
                    double t0, double t1, double t2)
{
    r->enc_cpu += t1 - t0;
    r->dec_cpu += t2 - t1;
    r->raw += raw;
    r->wire += clen;
    if (k >= fl->first_r2) {
        r->raw_r2 += raw;
        r->wire_r2 += clen;
    }
}

/* One frame through the codec API, exactly as the stream pipeline drives
 * it: page coder, compressor; decompressor, in-place page decoder. */
static int chain_frame(const ms_chain *c, ms_page_coder *enc, ms_page_coder *dec, const frame_list *fl,
                       size_t k, bench_ctx *x, run_result *r)
{
    const frame_ref *fr = &fl->f[k];
    const uint64_t *pfns = frame_pfns(fr, x->pfns);
    bool identity = ms_page_section_is_identity(c->stages);
    size_t raw = fr->count * PS, slen = raw, clen;
    const uint8_t *section = fr->pages;
    int rc = MS_OK;
    double t0 = ms_thread_cpu_s();
    if (!identity) {
        x->section.len = 0;
        rc = ms_page_coder_encode(enc, pfns, fr->pages, fr->count, &x->section, &r->st);
        section = x->section.data;
        slen = x->section.len;
    }
    if (!rc)
        rc = ms_compress(x->cctx, c, section, slen, x->comp, x->comp_cap, &clen);
    double t1 = ms_thread_cpu_s();
    if (!rc)
        rc = ms_decompress(x->cctx, c, x->comp, clen, x->dec, slen);
    if (!rc && !identity)
        rc = ms_page_coder_decode_inplace(dec, pfns, fr->count, x->dec, slen, x->dec_cap, NULL);
    double t2 = ms_thread_cpu_s();
    if (rc)
        return rc;
    account(r, fl, k, raw, clen, t0, t1, t2);
    if (identity) {
        r->st.pages += fr->count;
        r->st.raw += fr->count;
        r->st.in_bytes += raw;
        r->st.out_bytes += raw;
    }
    if (memcmp(x->dec, fr->pages, raw))
        r->mismatch = true;
    return MS_OK;
}

/* The same frame straight through the library, no migstream code. */
static int direct_frame(const ms_chain *c, const frame_list *fl, size_t k, bench_ctx *x, run_result *r)
{
    const frame_ref *fr = &fl->f[k];
    size_t raw = fr->count * PS, clen;
    bool ok;
    double t0 = ms_thread_cpu_s();
    if (c->comp == MS_COMP_LZ4) {
        int n = LZ4_compress_fast_extState(x->lz4_state, (const char *)fr->pages, (char *)x->comp,
                                           (int)raw, (int)x->comp_cap, c->level);
        clen = n > 0 ? (size_t)n : 0;
    } else {
        clen = ZSTD_compressCCtx(x->zc, x->comp, x->comp_cap, fr->pages, raw, c->level);
        if (ZSTD_isError(clen))
            clen = 0;
    }
    double t1 = ms_thread_cpu_s();
    if (!clen)
        return ms_error(MS_ERR_LIMIT, "direct %s call failed on frame %zu",
                        c->comp == MS_COMP_LZ4 ? "LZ4" : "zstd", k);
    if (c->comp == MS_COMP_LZ4)
        ok = LZ4_decompress_safe((const char *)x->comp, (char *)x->ddec, (int)clen, (int)raw) == (int)raw;
    else
        ok = ZSTD_decompressDCtx(x->zd, x->ddec, raw, x->comp, clen) == raw;
    double t2 = ms_thread_cpu_s();
    account(r, fl, k, raw, clen, t0, t1, t2);
    if (!ok || memcmp(x->ddec, fr->pages, raw))
        r->mismatch = true;
    return MS_OK;
}

/* Let the compressors allocate their working memory before resident memory
 * is measured, so the growth seen during a run is the page stores'. */
static void warm_up(const ms_chain *c, bool direct, const frame_list *fl, bench_ctx *x)
{
    const frame_ref *fr = &fl->f[0];
    size_t raw = fr->count * PS, clen;
    run_result scratch = {0};
    if (!ms_compress(x->cctx, c, fr->pages, raw, x->comp, x->comp_cap, &clen))
        ms_decompress(x->cctx, c, x->comp, clen, x->dec, raw);
    if (direct)
        direct_frame(c, fl, 0, x, &scratch);
}

/* One replay of all frames through the chain and, frame by frame, through
 * the direct call. Both see the same frame back to back, and which goes
 * first alternates, so each finds the frame in the CPU cache half of the
 * time and neither gains from the other's reads. */
static int run_once(const ms_chain *c, bool gate, bool direct, const frame_list *fl, const bench_opts *o,
                    bench_ctx *x, run_result *cr, run_result *dr)
{
    int rc = MS_OK;
    ms_page_coder_config cfg = {.stages = c->stages, .page_size = PS,
                                .delta_cache_bytes = o->cache_mib << 20, .dedup_bytes = o->dedup_mib << 20};
    memset(cr, 0, sizeof *cr);
    memset(dr, 0, sizeof *dr);
    warm_up(c, direct, fl, x);
    long rss0 = rss_kib(), rss_peak = rss0;
    ms_page_coder *dec = ms_page_coder_new(&cfg);
    cfg.gate = gate;
    ms_page_coder *enc = ms_page_coder_new(&cfg);
    if (!enc || !dec) {
        rc = ms_last_code() ? ms_last_code() : MS_ERR_NOMEM;
        goto out;
    }
    for (size_t k = 0; k < fl->n && !rc; k++) {
        if (direct && k % 2)
            rc = direct_frame(c, fl, k, x, dr);
        if (!rc)
            rc = chain_frame(c, enc, dec, fl, k, x, cr);
        if (!rc && direct && k % 2 == 0)
            rc = direct_frame(c, fl, k, x, dr);
        uint64_t cb = ms_page_coder_cache_bytes(enc);
        if (cb > cr->cache_peak)
            cr->cache_peak = cb;
        if ((k & 15) == 15 || k + 1 == fl->n) {
            long now = rss_kib();
            if (now > rss_peak)
                rss_peak = now;
        }
    }
    cr->rss_growth_kib = rss_peak - rss0;
out:
    ms_page_coder_free(enc);
    ms_page_coder_free(dec);
    return rc;
}

/* Keep the fastest of the repeats: noise only ever slows a run down. */
static void keep_best(run_result *best, const run_result *r, bool first)
{
    if (first) {
        *best = *r;
        return;
    }
    if (r->enc_cpu < best->enc_cpu)
        best->enc_cpu = r->enc_cpu;
    if (r->dec_cpu < best->dec_cpu)
        best->dec_cpu = r->dec_cpu;
    if (r->rss_growth_kib > best->rss_growth_kib)
        best->rss_growth_kib = r->rss_growth_kib;
    if (r->cache_peak > best->cache_peak)
        best->cache_peak = r->cache_peak;
    best->mismatch |= r->mismatch;
}

/* ---- isolated stages ------------------------------------------------------ */

typedef struct iso_result {
    double zero_mem_gbs;    /* zero pages streamed from memory (256 MiB) */
    double zero_cache_gbs;  /* a cache-resident zero page set */
    double memchr_mem_gbs;  /* glibc memchr over the same zero pages */
    double delta_mem_gbs;   /* round-2 pages against their round-1 versions */
    double delta_cache_gbs; /* the same on a cache-resident set of 64 pages */
    double delta_scatter_gbs; /* worst case: single changed bytes, cache-resident */
    double delta_avg_bytes;
    size_t delta_pages;
} iso_result;

static double gbs(double bytes, double s) { return s > 0 ? bytes / s / 1e9 : 0; }

/* Run `fn` over its working set until it has used at least 0.2 s of CPU. */
#define TIMED(bytes_out, secs_out, body)                                                            \
    do {                                                                                           \
        double t0_ = ms_thread_cpu_s(), t_;                                                        \
        uint64_t n_ = 0;                                                                           \
        do {                                                                                       \
            body;                                                                                  \
            n_++;                                                                                  \
        } while ((t_ = ms_thread_cpu_s() - t0_) < 0.2);                                            \
        (bytes_out) *= (double)n_;                                                                 \
        (secs_out) = t_;                                                                           \
    } while (0)

static volatile size_t sink_;

static void measure_isolated(const bench_data *d, iso_result *iso)
{
    size_t z = 0;
    double bytes, secs;
    memset(iso, 0, sizeof *iso);
    /* Zero pages streamed from memory: a zeroed buffer several times the
     * size of any L3 cache, so the check runs at the speed memory delivers. */
    const size_t big = 256u << 20;
    uint8_t *zbig = malloc(big);
    if (zbig) {
        memset(zbig, 1, big);
        __asm__ volatile("" : : "r"(zbig) : "memory"); /* keep both stores: real pages */
        memset(zbig, 0, big);
        bytes = (double)big;
        TIMED(bytes, secs, {
            for (size_t i = 0; i < big; i += PS)
                z += ms_page_is_zero(zbig + i, PS);
        });
        iso->zero_mem_gbs = gbs(bytes, secs);
        /* Reference for the memory bound: glibc's vectorised memchr reading
         * the same pages in full (it looks for a byte that is not there). */
        bytes = (double)big;
        TIMED(bytes, secs, {
            for (size_t i = 0; i < big; i += PS)
                z += memchr(zbig + i, 1, PS) == NULL;
        });
        iso->memchr_mem_gbs = gbs(bytes, secs);
        free(zbig);
    }
    uint8_t *zp = calloc(16, PS), *out = malloc(PS), *a = malloc(64 * PS), *b = malloc(64 * PS);
    if (!zp || !out || !a || !b)
        goto out;
    /* Touch the pages so they are real memory, not the shared zero page. */
    for (size_t i = 0; i < 16 * PS; i++)
        ((volatile uint8_t *)zp)[i] = 0;
    bytes = 16.0 * PS;
    TIMED(bytes, secs, {
        for (size_t i = 0; i < 16; i++)
            z += ms_page_is_zero(zp + i * PS, PS);
    });
    iso->zero_cache_gbs = gbs(bytes, secs);
    if (d->nresent) {
        size_t total = 0;
        bytes = (double)d->nresent * PS;
        TIMED(bytes, secs, {
            total = 0;
            for (size_t i = 0; i < d->nresent; i++)
                total += ms_delta_encode(d->img + d->resent_pfns[i] * PS, d->resent + i * PS, PS, out,
                                         PS - 2);
        });
        iso->delta_mem_gbs = gbs(bytes, secs);
        iso->delta_avg_bytes = (double)total / (double)d->nresent;
        iso->delta_pages = d->nresent;
        size_t nc = d->nresent < 64 ? d->nresent : 64;
        bytes = (double)nc * PS;
        TIMED(bytes, secs, {
            for (size_t i = 0; i < nc; i++)
                z += ms_delta_encode(d->img + d->resent_pfns[i] * PS, d->resent + i * PS, PS, out, PS - 2);
        });
        iso->delta_cache_gbs = gbs(bytes, secs);
    }
    /* Worst case for the run finder: the changed bytes are isolated. */
    uint64_t rs = 42;
    for (size_t i = 0; i < 64; i++)
        gen_pointers(a + i * PS, &rs);
    memcpy(b, a, 64 * PS);
    for (size_t i = 0; i < 64; i++)
        for (size_t k = 0; k < PS / 20; k++)
            b[i * PS + rng_next(&rs) % PS] ^= (uint8_t)(1 + rng_next(&rs) % 255);
    bytes = 64.0 * PS;
    TIMED(bytes, secs, {
        for (size_t i = 0; i < 64; i++)
            z += ms_delta_encode(a + i * PS, b + i * PS, PS, out, PS - 2);
    });
    iso->delta_scatter_gbs = gbs(bytes, secs);
out:
    sink_ = z;
    free(zp);
    free(out);
    free(a);
    free(b);
}

/* ---- report --------------------------------------------------------------- */

typedef struct chain_report {
    char name[64];
    ms_chain chain;
    run_result chain_r, direct_r;
    bool has_direct;
    bool gate; /* "+gate": the encoder gates delta as auto's does */
} chain_report;

typedef struct mem_report {
    uint64_t cache_peak;    /* largest ms_page_coder_cache_bytes, any chain */
    uint64_t cache_bound;   /* the page store bound of that chain, per side */
    long growth_kib;        /* largest resident growth while a chain with a store ran */
    uint64_t growth_bound;  /* the store bound of that chain, per side */
    long maxrss_kib;
} mem_report;

static double mbs(uint64_t bytes, double s) { return s > 0 ? (double)bytes / s / 1e6 : 0; }
static double ratio(uint64_t raw, uint64_t wire) { return wire ? (double)raw / (double)wire : 0; }
static double pct(double a, double b) { return b > 0 ? 100.0 * a / b : 0; }

static void direct_name(const chain_report *cr, char *buf, size_t n)
{
    snprintf(buf, n, "%s:%d", cr->chain.comp == MS_COMP_LZ4 ? "lz4" : "zstd", cr->chain.level);
}

static void print_text(const bench_opts *o, const bench_data *d, const chain_report *cr, size_t n,
                       const iso_result *iso, const mem_report *mem)
{
    printf("migstream bench codecs: %s, %zu pages (%.1f MiB), %zu zero",
           o->image ? o->image : "built-in sample", d->npages, (double)d->npages * PS / 1048576.0,
           d->zero_pages);
    if (!o->image) {
        printf(" [");
        for (int k = 0; k < K_COUNT; k++)
            printf("%s%s %zu", k ? ", " : "", kind_names[k], d->counts[k]);
        printf("]");
    }
    char rounds[32] = "round 2 resends";
    if (d->later_rounds > 1)
        snprintf(rounds, sizeof rounds, "rounds 2..%u resend", d->later_rounds + 1);
    printf("\n%s %zu modified pages (%.0f%% of non-zero pages, ~%.0f%% of each page's bytes changed "
           "each time)\n",
           rounds, d->nresent, o->mutate * 100, o->page_change * 100);
    printf("frames of %u pages; MB/s per core (raw bytes / CPU time), best of %u runs\n\n",
           o->frame_pages, o->repeat);
    printf("%-24s %8s %8s %7s %7s | %-7s %8s %8s %7s | %6s %6s\n", "chain", "enc MB/s", "dec MB/s",
           "ratio", "r2 rat", "direct", "enc MB/s", "dec MB/s", "ratio", "enc", "dec");
    for (size_t i = 0; i < n; i++) {
        const run_result *r = &cr[i].chain_r;
        printf("%-24s %8.0f %8.0f %7.2f %7.2f", cr[i].name, mbs(r->raw, r->enc_cpu),
               mbs(r->raw, r->dec_cpu), ratio(r->raw, r->wire), ratio(r->raw_r2, r->wire_r2));
        if (cr[i].has_direct) {
            const run_result *dr = &cr[i].direct_r;
            char dn[16];
            direct_name(&cr[i], dn, sizeof dn);
            printf(" | %-7s %8.0f %8.0f %7.2f | %5.1f%% %5.1f%%", dn, mbs(dr->raw, dr->enc_cpu),
                   mbs(dr->raw, dr->dec_cpu), ratio(dr->raw, dr->wire),
                   pct(mbs(r->raw, r->enc_cpu), mbs(dr->raw, dr->enc_cpu)),
                   pct(mbs(r->raw, r->dec_cpu), mbs(dr->raw, dr->dec_cpu)));
        }
        printf("%s\n", r->mismatch || cr[i].direct_r.mismatch ? "  DECODE MISMATCH" : "");
    }
    printf("(r2 rat: ratio of rounds 2.. alone, the resent pages)\n\npage stages: zero / dup / delta / "
           "delta miss / delta no gain / raw pages (+gate: / passed by delta / sent unkept)\n");
    for (size_t i = 0; i < n; i++) {
        const ms_stage_stats *st = &cr[i].chain_r.st;
        if (!cr[i].chain.stages)
            continue;
        printf("  %-24s %llu / %llu / %llu / %llu / %llu / %llu", cr[i].name,
               (unsigned long long)st->zero, (unsigned long long)st->dup, (unsigned long long)st->delta, (unsigned long long)st->delta_miss,
               (unsigned long long)st->delta_nogain, (unsigned long long)st->raw);
        if (cr[i].gate)
            printf(" / %llu / %llu", (unsigned long long)st->delta_off, (unsigned long long)st->unkept);
        printf("\n");
    }
    printf("\nzero-page check: %.1f GB/s on zero pages streamed from memory (glibc memchr reading "
           "the same pages: %.1f GB/s), %.1f GB/s in cache\n",
           iso->zero_mem_gbs, iso->memchr_mem_gbs, iso->zero_cache_gbs);
    if (iso->delta_pages)
        printf("delta encode: %.2f GB/s on the %zu resent pages (from memory), %.2f GB/s in cache; "
               "%.0f bytes per page\n",
               iso->delta_mem_gbs, iso->delta_pages, iso->delta_cache_gbs, iso->delta_avg_bytes);
    printf("delta encode, worst case (5%% of bytes changed, each alone; in cache): %.2f GB/s\n",
           iso->delta_scatter_gbs);
    printf("\nmemory: page store (delta %llu MiB + dedup %llu MiB per side when on): largest held "
           "%.1f MiB of its %.1f MiB bound; largest resident growth while a chain ran, sender and "
           "receiver stores together, %.1f MiB (bound 2 x %.1f MiB); peak RSS %.1f MiB\n",
           (unsigned long long)o->cache_mib, (unsigned long long)o->dedup_mib,
           mem->cache_peak / 1048576.0, mem->cache_bound / 1048576.0, mem->growth_kib / 1024.0,
           mem->growth_bound / 1048576.0, mem->maxrss_kib / 1024.0);
}

static void json_run(const char *key, const run_result *r)
{
    printf("\"%s\":{\"encode_mbs\":%.1f,\"decode_mbs\":%.1f,\"ratio\":%.4f,\"round2_ratio\":%.4f,"
           "\"raw_bytes\":%llu,\"wire_bytes\":%llu,\"encode_cpu_s\":%.6f,\"decode_cpu_s\":%.6f,"
           "\"mismatch\":%s}",
           key, mbs(r->raw, r->enc_cpu), mbs(r->raw, r->dec_cpu), ratio(r->raw, r->wire),
           ratio(r->raw_r2, r->wire_r2), (unsigned long long)r->raw, (unsigned long long)r->wire,
           r->enc_cpu, r->dec_cpu, r->mismatch ? "true" : "false");
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void print_json(const bench_opts *o, const bench_data *d, const chain_report *cr, size_t n,
                       const iso_result *iso, const mem_report *mem)
{
    printf("{\"image\":");
    if (o->image)
        json_string(o->image);
    else
        printf("null");
    printf(",\"pages\":%zu,\"zero_pages\":%zu,\"page_size\":%u,\"frame_pages\":%u,\"mutate\":%g,"
           "\"page_change\":%g,\"rounds\":%u,\"resent_pages\":%zu,\"repeat\":%u,\"seed\":%llu,",
           d->npages, d->zero_pages, PS, o->frame_pages, o->mutate, o->page_change, d->later_rounds + 1,
           d->nresent,
           o->repeat, (unsigned long long)o->seed);
    if (!o->image) {
        printf("\"sample\":{");
        for (int k = 0; k < K_COUNT; k++)
            printf("%s\"%s\":%zu", k ? "," : "", kind_names[k], d->counts[k]);
        printf("},");
    }
    printf("\"chains\":[");
    for (size_t i = 0; i < n; i++) {
        const ms_stage_stats *st = &cr[i].chain_r.st;
        printf("%s{\"chain\":", i ? "," : "");
        json_string(cr[i].name);
        printf(",");
        json_run("through_chain", &cr[i].chain_r);
        printf(",\"stages\":{\"zero\":%llu,\"dup\":%llu,\"delta\":%llu,\"delta_miss\":%llu,\"delta_nogain\":%llu,"
               "\"raw\":%llu,\"delta_off\":%llu,\"unkept\":%llu,\"section_bytes\":%llu}",
               (unsigned long long)st->zero, (unsigned long long)st->dup, (unsigned long long)st->delta,
               (unsigned long long)st->delta_miss, (unsigned long long)st->delta_nogain,
               (unsigned long long)st->raw, (unsigned long long)st->delta_off, (unsigned long long)st->unkept,
               (unsigned long long)st->out_bytes);
        if (cr[i].has_direct) {
            const run_result *r = &cr[i].chain_r, *dr = &cr[i].direct_r;
            char dn[16];
            direct_name(&cr[i], dn, sizeof dn);
            printf(",\"direct_name\":\"%s\",", dn);
            json_run("direct", dr);
            printf(",\"encode_pct_of_direct\":%.1f,\"decode_pct_of_direct\":%.1f",
                   pct(mbs(r->raw, r->enc_cpu), mbs(dr->raw, dr->enc_cpu)),
                   pct(mbs(r->raw, r->dec_cpu), mbs(dr->raw, dr->dec_cpu)));
        }
        printf("}");
    }
    printf("],\"zero_check_gbs\":{\"memory\":%.2f,\"memchr_memory\":%.2f,\"cache\":%.2f},",
           iso->zero_mem_gbs, iso->memchr_mem_gbs, iso->zero_cache_gbs);
    printf("\"delta_encode_gbs\":{\"memory\":%.3f,\"cache\":%.3f,\"scattered_cache\":%.3f,"
           "\"pages\":%zu,\"avg_bytes\":%.1f},",
           iso->delta_mem_gbs, iso->delta_cache_gbs, iso->delta_scatter_gbs, iso->delta_pages,
           iso->delta_avg_bytes);
    printf("\"memory\":{\"delta_mib\":%llu,\"dedup_mib\":%llu,\"store_peak_bytes\":%llu,"
           "\"store_bound_bytes\":%llu,\"rss_growth_kib\":%ld,\"rss_growth_bound_bytes\":%llu,"
           "\"max_rss_kib\":%ld}}\n",
           (unsigned long long)o->cache_mib, (unsigned long long)o->dedup_mib,
           (unsigned long long)mem->cache_peak, (unsigned long long)mem->cache_bound, mem->growth_kib,
           (unsigned long long)(2 * mem->growth_bound), mem->maxrss_kib);
}

/* ---- command line ---------------------------------------------------------- */

static void usage_codecs(FILE *f)
{
    fprintf(f,
            "usage: migstream bench codecs [OPTIONS]\n\n"
            "Run codec chains over a memory image and compare them with LZ4 / zstd called\n"
            "directly on the same pages. Throughput is MB/s per core (CPU time).\n\n"
            "  --image FILE        memory image to read (default: built-in mixed sample)\n"
            "  --size MIB          size of the built-in sample (default 64)\n"
            "  --chains LIST       chains separated by ';' (default \"%s\"); a chain\n"
            "                      ending in \"+gate\" gates delta as auto does\n"
            "  --frame-pages N     pages per frame, 1..1024 (default 256)\n"
            "  --mutate FRACTION   resend this fraction of the non-zero pages, modified, in a\n"
            "                      second round so delta is measured (default 0.05; 0: one round)\n"
            "  --page-change FRAC  fraction of a modified page's bytes changed (default 0.05;\n"
            "                      1: each resend rewrites the page whole with random bytes)\n"
            "  --rounds N          rounds in all, 2..16: every round after the first resends the\n"
            "                      same pages, changed again (default 2)\n"
            "  --cache-mib N       delta's share of the page store, per side (default 64)\n"
            "  --dedup-mib N       dedup's share of the page store, per side (default 64)\n"
            "  --repeat N          runs per measurement, the best is kept (default 3)\n"
            "  --seed N            seed of the sample and the mutations (default 1)\n"
            "  --json              print one JSON object instead of the table\n"
            "  -h, --help          this text\n",
            DEFAULT_CHAINS);
}

static void usage_bench(FILE *f)
{
    fprintf(f, "usage: migstream bench BENCHMARK [OPTIONS]\n\nbenchmarks:\n"
               "  codecs    codec chains vs direct LZ4/zstd calls, zero check, delta encoder\n\n"
               "migstream bench BENCHMARK --help for its options\n");
}

static int parse_u64(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi || v[0] == '-')
        return ms_error(MS_ERR_INVAL, "%s: \"%s\" is not a number in %llu..%llu", opt, v,
                        (unsigned long long)lo, (unsigned long long)hi);
    *out = x;
    return MS_OK;
}

static int parse_frac(const char *opt, const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x >= 0 && x <= 1))
        return ms_error(MS_ERR_INVAL, "%s: \"%s\" is not a fraction in 0..1", opt, v);
    *out = x;
    return MS_OK;
}

/* 0 ok, 1 help shown, negative error. */
static int parse_opts(int argc, char **argv, bench_opts *o)
{
    static const struct option longopts[] = {
        {"image", required_argument, NULL, 'i'},  {"size", required_argument, NULL, 's'},
        {"chains", required_argument, NULL, 'c'}, {"frame-pages", required_argument, NULL, 'f'},
        {"mutate", required_argument, NULL, 'm'}, {"page-change", required_argument, NULL, 'p'},
        {"cache-mib", required_argument, NULL, 'C'}, {"dedup-mib", required_argument, NULL, 'D'},
        {"repeat", required_argument, NULL, 'r'}, {"rounds", required_argument, NULL, 'R'},
        {"seed", required_argument, NULL, 'S'},   {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    uint64_t v = 0;
    int c, rc = MS_OK;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'i': o->image = optarg; break;
        case 's': rc = parse_u64("--size", optarg, 1, 1 << 20, &o->size_mib); break;
        case 'c': o->chains = optarg; break;
        case 'f':
            rc = parse_u64("--frame-pages", optarg, 1, 1024, &v);
            o->frame_pages = (uint32_t)v;
            break;
        case 'm': rc = parse_frac("--mutate", optarg, &o->mutate); break;
        case 'p': rc = parse_frac("--page-change", optarg, &o->page_change); break;
        case 'C': rc = parse_u64("--cache-mib", optarg, 1, 1 << 20, &o->cache_mib); break;
        case 'D': rc = parse_u64("--dedup-mib", optarg, 1, 1 << 20, &o->dedup_mib); break;
        case 'R':
            rc = parse_u64("--rounds", optarg, 2, 16, &v);
            o->rounds = (unsigned)v;
            break;
        case 'r':
            rc = parse_u64("--repeat", optarg, 1, 100, &v);
            o->repeat = (unsigned)v;
            break;
        case 'S': rc = parse_u64("--seed", optarg, 0, UINT64_MAX, &o->seed); break;
        case 'j': o->json = true; break;
        case 'h': return 1;
        case ':':
            return ms_error(MS_ERR_INVAL, "option %s needs a value", argv[optind - 1]);
        default:
            return ms_error(MS_ERR_INVAL, "unknown option %s", argv[optind - 1]);
        }
    }
    if (!rc && optind < argc)
        rc = ms_error(MS_ERR_INVAL, "unexpected argument \"%s\"", argv[optind]);
    return rc;
}

static int parse_chains(const char *list, chain_report *cr, size_t *n)
{
    char *copy = strdup(list), *save = NULL;
    int rc = MS_OK;
    *n = 0;
    if (!copy)
        return ms_error(MS_ERR_NOMEM, "out of memory");
    for (char *tok = strtok_r(copy, ";", &save); tok && !rc; tok = strtok_r(NULL, ";", &save)) {
        if (*n == MAX_CHAINS) {
            rc = ms_error(MS_ERR_INVAL, "--chains: more than %d chains", MAX_CHAINS);
            break;
        }
        chain_report *c = &cr[*n];
        memset(c, 0, sizeof *c);
        char *plus = strstr(tok, "+gate");
        if (plus && !plus[5]) {
            c->gate = true;
            *plus = 0;
        }
        rc = ms_chain_parse(tok, &c->chain);
        if (!rc && c->chain.is_auto)
            rc = ms_error(MS_ERR_INVAL, "--chains: \"%s\": auto needs a link to measure; benchmark "
                                        "concrete chains", tok);
        if (!rc) {
            ms_chain_format(&c->chain, c->name, sizeof c->name - 8);
            if (c->gate)
                strcat(c->name, "+gate");
            c->has_direct = c->chain.comp == MS_COMP_LZ4 || c->chain.comp == MS_COMP_ZSTD;
            (*n)++;
        }
    }
    if (!rc && !*n)
        rc = ms_error(MS_ERR_INVAL, "--chains: no chain given");
    free(copy);
    return rc;
}

static int ctx_init(bench_ctx *x, uint32_t frame_pages)
{
    size_t raw = (size_t)frame_pages * PS;
    ms_chain worst = {.is_auto = true};
    x->dec_cap = ms_page_section_bound(MS_STAGE_ZERO, PS, frame_pages);
    x->comp_cap = ms_compress_bound(&worst, x->dec_cap);
    x->comp = malloc(x->comp_cap);
    x->dec = malloc(x->dec_cap);
    x->ddec = malloc(raw);
    x->pfns = malloc(frame_pages * sizeof *x->pfns);
    x->cctx = ms_codec_ctx_new();
    x->lz4_state = malloc((size_t)LZ4_sizeofState());
    x->zc = ZSTD_createCCtx();
    x->zd = ZSTD_createDCtx();
    if (!x->comp || !x->dec || !x->ddec || !x->pfns || !x->cctx || !x->lz4_state || !x->zc || !x->zd ||
        ms_buf_reserve(&x->section, x->dec_cap))
        return ms_error(MS_ERR_NOMEM, "cannot allocate buffers for %zu-byte frames", raw);
    /* Make the buffers resident now: the resident growth measured during a
     * run must be the page stores alone. */
    memset(x->comp, 0, x->comp_cap);
    memset(x->dec, 0, x->dec_cap);
    memset(x->ddec, 0, raw);
    memset(x->section.data, 0, x->section.cap);
    return MS_OK;
}

static void ctx_free(bench_ctx *x)
{
    free(x->comp);
    free(x->dec);
    free(x->ddec);
    free(x->pfns);
    ms_buf_free(&x->section);
    ms_codec_ctx_free(x->cctx);
    free(x->lz4_state);
    ZSTD_freeCCtx(x->zc);
    ZSTD_freeDCtx(x->zd);
}

static int run_all(const bench_opts *o, const frame_list *fl, bench_ctx *x, chain_report *cr,
                   size_t n, mem_report *mem)
{
    for (size_t i = 0; i < n; i++) {
        for (unsigned rep = 0; rep < o->repeat; rep++) {
            run_result r, dr;
            int rc = run_once(&cr[i].chain, cr[i].gate, cr[i].has_direct, fl, o, x, &r, &dr);
            if (rc)
                return ms_error_wrap(rc, "chain %s", cr[i].name);
            keep_best(&cr[i].chain_r, &r, rep == 0);
            keep_best(&cr[i].direct_r, &dr, rep == 0);
        }
        uint64_t bound = ((cr[i].chain.stages & MS_STAGE_DELTA) ? o->cache_mib << 20 : 0) +
                         ((cr[i].chain.stages & MS_STAGE_DEDUP) ? o->dedup_mib << 20 : 0);
        if (cr[i].chain_r.cache_peak > mem->cache_peak) {
            mem->cache_peak = cr[i].chain_r.cache_peak;
            mem->cache_bound = bound;
        }
        if (bound && cr[i].chain_r.rss_growth_kib > mem->growth_kib) {
            mem->growth_kib = cr[i].chain_r.rss_growth_kib;
            mem->growth_bound = bound;
        }
        if (!o->json && isatty(STDERR_FILENO))
            fprintf(stderr, "\r%zu/%zu chains done", i + 1, n);
    }
    if (!o->json && isatty(STDERR_FILENO))
        fprintf(stderr, "\r%30s\r", "");
    return MS_OK;
}

static int bench_codecs(int argc, char **argv)
{
    bench_opts o = {.size_mib = 64, .chains = DEFAULT_CHAINS, .frame_pages = 256, .mutate = 0.05,
                    .page_change = 0.05, .cache_mib = 64, .dedup_mib = 64, .repeat = 3, .seed = 1,
                    .rounds = 2};
    static chain_report cr[MAX_CHAINS];
    size_t n = 0;
    bench_data d = {0};
    frame_list fl = {0};
    bench_ctx x = {0};
    iso_result iso;
    int rc = parse_opts(argc, argv, &o);
    if (rc == 1) {
        usage_codecs(stdout);
        return MS_EXIT_OK;
    }
    if (!rc)
        rc = parse_chains(o.chains, cr, &n);
    if (rc) {
        fprintf(stderr, "migstream bench codecs: %s\n(migstream bench codecs --help for usage)\n",
                ms_last_error());
        return MS_EXIT_USAGE;
    }
    mem_report mem = {0};
    rc = prepare_data(&o, &d);
    if (!rc)
        rc = build_frames(&d, o.frame_pages, &fl);
    if (!rc)
        rc = ctx_init(&x, o.frame_pages);
    if (!rc)
        rc = run_all(&o, &fl, &x, cr, n, &mem);
    if (rc)
        goto out;
    /* Peak resident size of the chain runs, before the isolated
     * measurements allocate their own buffers. */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    mem.maxrss_kib = ru.ru_maxrss;
    measure_isolated(&d, &iso);
    if (o.json)
        print_json(&o, &d, cr, n, &iso, &mem);
    else
        print_text(&o, &d, cr, n, &iso, &mem);
    for (size_t i = 0; i < n; i++)
        if (cr[i].chain_r.mismatch || cr[i].direct_r.mismatch)
            rc = ms_error(MS_ERR_VERIFY, "chain %s: decoded pages differ from the originals", cr[i].name);
out:
    if (rc)
        fprintf(stderr, "migstream bench codecs: %s\n", ms_last_error());
    ctx_free(&x);
    free(fl.f);
    free_data(&d);
    /* Past option parsing nothing is the caller's usage or a peer's doing:
     * a differing decode is a verification failure, the rest a failure. */
    return rc == MS_OK ? MS_EXIT_OK : rc == MS_ERR_VERIFY ? MS_EXIT_VERIFY : MS_EXIT_FAIL;
}

int cmd_bench(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage_bench(argc < 2 ? stderr : stdout);
        return argc < 2 ? MS_EXIT_USAGE : MS_EXIT_OK;
    }
    if (!strcmp(argv[1], "codecs"))
        return bench_codecs(argc - 1, argv + 1);
    fprintf(stderr, "migstream bench: unknown benchmark \"%s\"\n\n", argv[1]);
    usage_bench(stderr);
    return MS_EXIT_USAGE;
}
