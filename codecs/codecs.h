/* migstream codecs: what turns a batch of pages into fewer bytes and back.
 *
 * A chain has two layers:
 *  - page stages (zero, dedup, delta), which are *stateful*: the delta cache
 *    and the dedup index must evolve identically on both sides, so a
 *    ms_page_coder is driven in frame-sequence order by exactly one thread per
 *    side (the sender's producer, the receiver's in-order delivery thread);
 *  - one block compressor (none, lz4, zstd:LEVEL), which is *stateless per
 *    frame*, so any worker thread can run it with its own ms_codec_ctx.
 * A chain is named by a string such as "zero,delta,lz4" or "zero,zstd:3". */
#ifndef MS_CODECS_H
#define MS_CODECS_H

#include <stdio.h>

#include "common/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- chain description ------------------------------------------------ */

#define MS_STAGE_ZERO  0x01u
#define MS_STAGE_DELTA 0x02u
#define MS_STAGE_DEDUP 0x04u

enum ms_compressor_id { MS_COMP_NONE = 0, MS_COMP_LZ4 = 1, MS_COMP_ZSTD = 2, MS_COMP_COUNT };

typedef struct ms_chain {
    uint32_t stages;   /* MS_STAGE_* bits */
    uint8_t comp;      /* enum ms_compressor_id */
    int8_t level;      /* zstd level (1..19) or lz4 acceleration (1..65537 clipped to 127) */
    bool is_auto;      /* "auto": compressor chosen per fragment at run time */
} ms_chain;

/* Parse "zero,delta,lz4", "zero,zstd:3", "lz4:8" (acceleration), "none",
 * "zero,dedup,delta,auto". Order of page stages is fixed (zero, dedup, delta)
 * whatever order is written; unknown or repeated names, a missing or bad
 * level, two compressors: MS_ERR_INVAL with a message naming the token. */
int ms_chain_parse(const char *text, ms_chain *out);
/* Canonical text of a chain ("zero,delta,lz4:1"); returns snprintf's count. */
int ms_chain_format(const ms_chain *c, char *buf, size_t n);

/* Wire id of a *concrete* chain (never auto): byte 0 compressor, byte 1
 * level as uint8, byte 2 stage bits, byte 3 zero. An auto chain maps to
 * compressor byte MS_CHAIN_ID_AUTO, which ms_chain_from_id refuses: frames
 * always carry the compressor actually used. */
#define MS_CHAIN_ID_AUTO 0xffu
uint32_t ms_chain_to_id(const ms_chain *c);
int ms_chain_from_id(uint32_t id, ms_chain *out); /* MS_ERR_CORRUPT if unknown */

/* ---- block compressors (ops table + registry) -------------------------- */

typedef struct ms_compressor_ops {
    const char *name;
    uint8_t id;
    int default_level;
    int min_level, max_level;
    void *(*ctx_new)(void);          /* per-thread context; NULL on failure */
    void (*ctx_free)(void *ctx);
    size_t (*bound)(size_t src_len); /* worst-case output size */
    /* Return MS_OK and *out_len, or an error (never writes past dst_cap). */
    int (*compress)(void *ctx, int level, const void *src, size_t src_len,
                    void *dst, size_t dst_cap, size_t *out_len);
    /* Must produce exactly `dst_len` bytes or fail with MS_ERR_CORRUPT. */
    int (*decompress)(void *ctx, const void *src, size_t src_len, void *dst, size_t dst_len);
} ms_compressor_ops;

const ms_compressor_ops *ms_compressor_by_id(unsigned id);
const ms_compressor_ops *ms_compressor_by_name(const char *name);

/* Per-thread context holding one context per compressor, created lazily and
 * reused across frames (zstd contexts are expensive to create). */
typedef struct ms_codec_ctx ms_codec_ctx;
ms_codec_ctx *ms_codec_ctx_new(void);
void ms_codec_ctx_free(ms_codec_ctx *ctx);

/* Compress a block with chain->comp / chain->level. MS_COMP_NONE copies.
 * dst must hold ms_compress_bound(chain, src_len) bytes. */
size_t ms_compress_bound(const ms_chain *c, size_t src_len);
int ms_compress(ms_codec_ctx *ctx, const ms_chain *c, const void *src, size_t src_len,
                void *dst, size_t dst_cap, size_t *out_len);
/* Decompress into exactly dst_len bytes (the length is carried by the frame). */
int ms_decompress(ms_codec_ctx *ctx, const ms_chain *c, const void *src, size_t src_len,
                  void *dst, size_t dst_len);

/* ---- XBZRLE-style delta of one page against its previous version ------ */

/* Encode `cur` against `old` (both `len` bytes): XOR, then alternating
 * zero-run / literal-run lengths in ULEB128, literal bytes after their
 * length. Returns the encoded size, or 0 if it would be >= max_out (the
 * caller then sends the page whole). */
size_t ms_delta_encode(const uint8_t *old, const uint8_t *cur, size_t len,
                       uint8_t *out, size_t max_out);
/* Apply a delta to `page` (in place, `len` bytes). MS_ERR_CORRUPT if any run
 * would cross the page end or the input is malformed. */
int ms_delta_decode(const uint8_t *in, size_t in_len, uint8_t *page, size_t len);

/* True if the page is all zero bytes. */
bool ms_page_is_zero(const void *page, size_t len);

/* ---- stateful page stages --------------------------------------------- */

/* Per-page tags in the page section of a frame. */
/* UNKEPT: sent whole and not kept in the page store (any version of the pfn
 * there is dropped), as a gated sender sends pages while neither delta nor
 * dedup runs, so that neither side pays for copies nobody will use. */
enum ms_page_tag { MS_TAG_RAW = 0, MS_TAG_ZERO = 1, MS_TAG_DELTA = 2, MS_TAG_DUP = 3, MS_TAG_UNKEPT = 4 };

typedef struct ms_stage_stats {
    uint64_t pages;        /* pages seen */
    uint64_t zero;         /* elided as zero */
    uint64_t dup;          /* sent as a reference to identical content */
    uint64_t delta;        /* sent as a delta (cache hit, delta smaller) */
    uint64_t delta_miss;   /* delta stage on, no cache entry */
    uint64_t delta_nogain; /* cache hit but delta not smaller: sent raw */
    uint64_t raw;          /* sent whole */
    uint64_t delta_off;    /* passed by delta while its gate had it off */
    uint64_t unkept;       /* of the raw pages: not kept in the page store (UNKEPT) */
    uint64_t in_bytes;     /* page bytes in */
    uint64_t out_bytes;    /* page-section bytes out (before compression) */
} ms_stage_stats;
void ms_stage_stats_add(ms_stage_stats *into, const ms_stage_stats *s);

/* Delta and dedup share one page store (the last version sent of each
 * pfn, mirrored on both sides); its bound is delta_cache_bytes if delta is
 * on plus dedup_bytes if dedup is on, bookkeeping included. Both sides must
 * use the same stages, page size and bounds. */
typedef struct ms_page_coder_config {
    uint32_t stages;          /* MS_STAGE_* bits active for this stream */
    size_t page_size;         /* MS_PAGE_SIZE unless a test says otherwise */
    uint64_t delta_cache_bytes; /* delta's share of the page store (0: 64 MiB) */
    uint64_t dedup_bytes;     /* dedup's share of the page store (0: 64 MiB) */
    unsigned dedup_hash_bits; /* tests only: keep this many bits of the content
                                 hash (0: all 64) to force collisions */
    /* Sender only (the chain's compressor is "auto"): gate delta, i.e. pass
     * it over for a stretch of sections while it saves less than
     * MS_GATE_MIN_GAIN of the pages it diffs. The receiver needs nothing:
     * every page carries its tag (UNKEPT when no stage will want it again).
     * Dedup is never gated: its worth lies ahead (a content indexed now is
     * matched later), which no measure of the past predicts. */
    bool gate;
} ms_page_coder_config;

/* The delta gate (docs/codecs.md, "Gating delta"): delta is judged on
 * every MS_GATE_WINDOW pages it diffs; below the gain it is passed over for
 * MS_GATE_OFF_MIN sections, a stretch that doubles on each failed trial up
 * to MS_GATE_OFF_MAX and falls back when delta pays. */
#define MS_GATE_MIN_GAIN 0.05
#define MS_GATE_WINDOW 1024u
#define MS_GATE_OFF_MIN 16u
#define MS_GATE_OFF_MAX 256u

typedef struct ms_page_coder ms_page_coder;
ms_page_coder *ms_page_coder_new(const ms_page_coder_config *cfg);
void ms_page_coder_free(ms_page_coder *pc);
/* Bytes currently held by the coder's page store (never above the bound). */
uint64_t ms_page_coder_cache_bytes(const ms_page_coder *pc);
/* Pages the page store can hold: what fits its bound after the per-entry
 * bookkeeping (0 without delta and dedup). */
uint64_t ms_page_coder_cache_capacity(const ms_page_coder *pc);

/* Encode `count` pages (page i at pages + i*page_size, address pfns[i]) into
 * the page section appended to `out`. Updates the caches exactly as the
 * decoder will. Pages of one call must have distinct pfns. */
int ms_page_coder_encode(ms_page_coder *pc, const uint64_t *pfns, const uint8_t *pages,
                         size_t count, ms_buf *out, ms_stage_stats *st);
/* Decode a page section into `pages` (count * page_size bytes) and update the
 * caches. Any inconsistency (unknown tag, delta without a cache entry, bad
 * length, trailing bytes) is MS_ERR_CORRUPT and leaves no partial cache
 * update visible as success. */
int ms_page_coder_decode(ms_page_coder *pc, const uint64_t *pfns, size_t count,
                         const uint8_t *in, size_t in_len, uint8_t *pages,
                         ms_stage_stats *st);

/* Largest page section ms_page_coder_encode can produce for `count` pages of
 * a coder with these stages (size decompression buffers with it). */
size_t ms_page_section_bound(uint32_t stages, size_t page_size, size_t count);
/* With no page stages the section is the pages themselves, byte for byte:
 * a sender may compress its page buffer directly instead of encoding. */
static inline bool ms_page_section_is_identity(uint32_t stages) { return stages == 0; }

/* ms_page_coder_decode without the copy of raw pages: `buf` holds the page
 * section (in_len bytes, e.g. straight out of ms_decompress) and has room for
 * cap >= max(in_len, count * page_size) bytes; on success its first
 * count * page_size bytes are the pages. On error the content of buf is
 * undefined and the caches are unchanged, as with ms_page_coder_decode. */
int ms_page_coder_decode_inplace(ms_page_coder *pc, const uint64_t *pfns, size_t count,
                                 uint8_t *buf, size_t in_len, size_t cap, ms_stage_stats *st);

/* ---- auto: the compressor chosen at run time (auto.c) ------------------ */

/* Candidates of the "auto" compressor, in this order. */
enum ms_auto_cand { MS_AUTO_NONE = 0, MS_AUTO_LZ4, MS_AUTO_ZSTD1, MS_AUTO_ZSTD3, MS_AUTO_NCAND };

/* What the decision rule sees. Throughput of a candidate, in compressor
 * input bytes per second delivered, is
 *   min(link_rate / ratio, workers * cpu_rate)
 * (link_rate <= 0: unknown, taken as unlimited; none has ratio 1 and no CPU
 * cost). A candidate with an unknown cpu_rate or ratio (<= 0) is not chosen. */
typedef struct ms_auto_view {
    double link_rate;                /* wire bytes/s */
    unsigned workers;                /* compressing threads (>= 1) */
    double cpu_rate[MS_AUTO_NCAND];  /* input bytes/s of one worker thread */
    double ratio[MS_AUTO_NCAND];     /* output / input bytes */
    /* Input bytes/s the pipeline delivered while the candidate was the
     * decision, as a share of what the formula said then (0: not
     * measured). Where known the formula is scaled by it: it includes what
     * the formula cannot see, e.g. a receiver on the same cores that
     * decompresses, or workers sharing cores with the producer. */
    double efficiency[MS_AUTO_NCAND];
    /* Wire bytes/s seen while the candidate was the decision and the wire
     * was full (0: not measured); where known it replaces link_rate for
     * that candidate, since a wire full at a receiver's pace (one host)
     * depends on the choice. */
    double wire_rate[MS_AUTO_NCAND];
    /* A candidate without a measured efficiency has its CPU rate divided by
     * 1 + this before the formula (0: no margin). */
    double trial_margin;
    /* No link rate is known and the wire has not yet been seen free (not
     * full for MS_AUTO_FREE_WINDOWS windows in a row): sending as is is no
     * candidate, since on a slow link it is the worst. */
    bool link_unseen;
} ms_auto_view;
#define MS_AUTO_FREE_WINDOWS 3

/* Pure rule, no clocks: 0 if the candidate's estimates are unknown. */
double ms_auto_throughput(const ms_auto_view *v, unsigned cand);
/* What the decision compares: the formula (with wire_rate[cand] as the
 * link where known) times efficiency[cand] if measured, else with
 * cpu_rate[cand] / (1 + trial_margin). */
double ms_auto_estimate(const ms_auto_view *v, unsigned cand);
/* The best candidate: the cheapest compressor within `hysteresis` of the
 * best estimate, and a costlier compressor only if it promises 5% more
 * than a cheaper one; sending as is only when it beats every compressor by
 * 10% more (a compressor sees the data turn compressible, sending as is
 * does not) and never while v->link_unseen. A cheaper `current` is kept
 * until it falls twice the hysteresis behind, a costlier one until its
 * lead falls under half the margin (so small changes cause no
 * flapping). */
unsigned ms_auto_decide(const ms_auto_view *v, unsigned current, double hysteresis);
/* Concrete chain of a candidate with the session's page stages. */
void ms_auto_chain(unsigned cand, uint32_t stages, ms_chain *out);
const char *ms_auto_name(unsigned cand); /* "none", "lz4", "zstd:1", "zstd:3" */

typedef struct ms_auto_config {
    unsigned workers;       /* 0: 1 */
    double link_cap;        /* bandwidth cap in bytes/s (also the first estimate); 0: none */
    unsigned explore_every; /* every Nth frame tries another compressor; 0: 32 */
    double alpha;           /* weight of a new sample in the moving averages; 0: 0.25 */
    double hysteresis;      /* 0: 0.01 */
    uint64_t steady_frames; /* a candidate's efficiency, measured while it was the decision,
                               stands for this many frames, then it may be tried again;
                               0: 2048 */
    double trial_margin;    /* see ms_auto_view; 0: 0.25 (negative: none) */
} ms_auto_config;

typedef struct ms_auto_stats {
    uint64_t frames[MS_AUTO_NCAND];    /* frames compressed with each */
    uint64_t explored[MS_AUTO_NCAND];  /* of which exploration */
    uint64_t in_bytes[MS_AUTO_NCAND];  /* compressor input bytes */
    uint64_t out_bytes[MS_AUTO_NCAND]; /* compressor output bytes (as sent) */
    uint64_t switches;                 /* changes of the decision */
    unsigned current;                  /* the decision now */
} ms_auto_stats;

/* Decision state shared by the worker threads (internally locked).
 * Deterministic: the same calls in the same order give the same picks. */
typedef struct ms_auto ms_auto;
ms_auto *ms_auto_new(const ms_auto_config *cfg); /* NULL: out of memory */
void ms_auto_free(ms_auto *a);
/* What held a rate window back: frames waiting for the link (the rate is
 * the link's), frames waiting for a worker, or neither (the producer). */
enum ms_auto_limit { MS_AUTO_BY_PRODUCER = 0, MS_AUTO_BY_LINK = 1, MS_AUTO_BY_WORKERS = 2 };
/* The wire rate of one window. It is the link's capacity only if the link
 * was the bottleneck (limit MS_AUTO_BY_LINK, "saturated"); otherwise it is
 * a lower bound and only a higher sample is taken, so better compression
 * slowing the wire down never reads as a slower link; an unknown link (no
 * cap, never saturated) stays unknown, i.e. unlimited. Never above
 * link_cap. A saturated window also sets the current choice's wire_rate.
 * Once the link is known and three new values (rate windows) have come
 * since the last switch, the rate times the current choice's input/output
 * bytes since that switch is what the choice delivered, and that over the
 * formula its efficiency (ms_auto_view.efficiency), unless the producer
 * held the window back and the formula calls the choice link-bound. The
 * first saturated window of a stream (queues on the path filling) sets
 * only the link. */
void ms_auto_link_sample(ms_auto *a, double bytes_per_s, int limit);
/* Candidate for frame `seq` of in_bytes compressor input: a candidate never
 * measured yet first, every explore_every-th frame another candidate in
 * turn, else the decision. Frames under MS_AUTO_MIN_SAMPLE bytes always get
 * the decision (an exploration turn passes to the next larger frame) and
 * teach ms_auto_record nothing but the stats. *shadow (when non-NULL) is
 * set to a candidate to compress an explored frame with as well, only to
 * compare the two on the same data (ms_auto_compare), or MS_AUTO_NCAND. */
#define MS_AUTO_MIN_SAMPLE 65536u
unsigned ms_auto_pick(ms_auto *a, uint64_t seq, uint64_t in_bytes, unsigned *shadow);
/* The same in_bytes compressed by `cand` (sent) and `shadow` (not sent):
 * learns how their ratios and speeds compare. Call before ms_auto_record
 * of that frame. */
void ms_auto_compare(ms_auto *a, uint64_t in_bytes, unsigned cand, uint64_t cand_out, double cand_cpu_s,
                     unsigned shadow, uint64_t shadow_out, double shadow_cpu_s);
/* Result of compressing in_bytes with `cand` into out_bytes in cpu_s
 * seconds of the worker thread's CPU time; updates estimates and
 * re-decides. */
void ms_auto_record(ms_auto *a, unsigned cand, uint64_t in_bytes, uint64_t out_bytes, double cpu_s);
void ms_auto_get_view(ms_auto *a, ms_auto_view *out);
void ms_auto_get_stats(ms_auto *a, ms_auto_stats *out);
/* The choices as one JSON object, no newline: per candidate ("none", "lz4",
 * "zstd:1", "zstd:3") frames, explored frames, compressor input bytes and
 * output bytes (what went on the wire as frame bodies), then the number of
 * decision changes and the decision at the end. For `--json` reports. */
void ms_auto_stats_json(const ms_auto_stats *st, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
