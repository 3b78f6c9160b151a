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

/* Capacity of a source: the most pages it will ever number. Size bitmaps
 * (and per-page state) for this many bits. It equals s->npages for every
 * source except a `process` source built with a page bound (max_pages) or
 * spawned, whose s->npages may grow after ms_source_start() or
 * ms_source_dirty(), never beyond. */
uint64_t ms_source_max_pages(const ms_page_source *s);

/* ------------------------------------------------------------------ */
/* process: the memory of a running Linux process (or process tree).
 *
 * Tracking: userfaultfd in asynchronous write-protect mode plus the
 * PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux >= 6.7, root or ptrace
 * rights). The userfaultfd must be created by the target itself (it acts on
 * the mm of its creator): `spawn` runs the command with LD_PRELOAD of
 * libmigstream-uffd.so, whose constructor creates it and reports its number
 * on a pipe; `attach` makes the target call userfaultfd() by injecting one
 * system call with ptrace (x86-64). Either way the source then takes the fd
 * with pidfd_getfd() and does all registration itself.
 *
 * Page numbering: pages are slots 0..npages-1. Each tracked span of memory
 * (a private mapping of one process, or a range of one shared-memory object
 * such as a memfd or shared anonymous mapping, numbered once however many
 * processes map it) owns a contiguous run of slots, allocated in the order
 * the spans are discovered (construction first, then start() and each
 * dirty() call, which reread /proc/PID/maps). Memory that goes away (munmap, mprotect to
 * non-writable, process exit) frees its slots: they are reported dirty once
 * and then read as zeros until a new span reuses them (reported dirty
 * again). New spans take free slots first, then grow npages up to the bound.
 * ms_process_source_ranges() lists the current table.
 *
 * Selection: writable private anonymous mappings (heap, stack, anon mmap),
 * writable shared anonymous / memfd / SysV / /dev/shm mappings, and with
 * MS_PROC_PRIVATE_FILE also writable private file mappings (.data, .bss
 * COW pages). Memory that is not writable is not part of the image.
 *
 * Errors never lose a write: a scan error or an unregistered new mapping
 * (EPERM from PM_SCAN_CHECK_WPASYNC) reports the whole span dirty and
 * re-registers and re-protects it; a span that cannot be registered is
 * reported dirty at every call. If the (root) process exits, dirty(), read()
 * and pause() fail with MS_ERR_CLOSED naming the pid. Details, costs and
 * limits: docs/sources.md. */

enum ms_process_flags {
    MS_PROC_CHILDREN = 1u << 0,     /* attach: also track descendants */
    MS_PROC_ROOT_ONLY = 1u << 1,    /* spawn: track the command's process only */
    MS_PROC_PRIVATE_FILE = 1u << 2, /* also writable private file mappings */
};

typedef struct ms_addr_range {
    uint64_t start, end; /* [start, end), page aligned */
} ms_addr_range;

typedef struct ms_process_opts {
    uint32_t flags;              /* ms_process_flags */
    /* attach only: track just these address ranges of the pid (no
     * discovery of other mappings); NULL = every selected mapping. */
    const ms_addr_range *ranges;
    size_t nranges;
    /* >0: s->npages may grow up to this bound after start() or dirty();
     * the caller sizes bitmaps (and per-page state) for
     * ms_source_max_pages(s) and rereads s->npages after each call. Pages
     * added by start() are reported again by the first dirty().
     * 0 with attach: s->npages is fixed at what construction found (new
     * memory can only reuse freed slots; beyond that dirty() fails with
     * MS_ERR_LIMIT). 0 with spawn: grow up to RAM + swap. Without a bound,
     * construction refuses more writable memory than RAM + swap. */
    uint64_t max_pages;
    /* spawn: the preload library (NULL: $MIGSTREAM_UFFD_PRELOAD, then the
     * build tree's and the installed copy). */
    const char *preload;
    /* spawn: file receiving the command's stdout and stderr (NULL: inherit). */
    const char *output;
    /* pause: how long every thread may take to stop (0: 10 s). */
    double stop_timeout_s;
} ms_process_opts;

/* MS_OK if this kernel and these privileges allow process tracking;
 * otherwise MS_ERR_UNSUPPORTED with the reason in ms_last_error(). */
int ms_process_probe(void);

/* Track the memory of the running process `pid` (opts may be NULL). */
int ms_process_source_attach(int pid, const ms_process_opts *opts, ms_page_source **out);

/* Start argv[0] (searched in PATH) with argv under the uffd preload and
 * track it and, unless MS_PROC_ROOT_ONLY, its descendants. The command runs
 * from return on. Destroying the source terminates the command's processes
 * (SIGTERM, then SIGKILL after 3 s) and reaps it; an attached process is
 * left running (resumed if we paused it) with tracking removed. */
int ms_process_source_spawn(char *const argv[], const ms_process_opts *opts, ms_page_source **out);

/* The (root) pid of a process source, -1 for other sources. */
int ms_process_source_pid(const ms_page_source *s);

typedef struct ms_process_range {
    int pid;             /* a process mapping it */
    uint64_t addr;       /* its address there */
    uint64_t first_page; /* slot of the page at addr */
    uint64_t npages;
    bool shared;         /* shared memory object (one slot run for all mappers) */
    bool tracked;        /* false: not registered, reported dirty every time */
} ms_process_range;

/* The current page numbering, sorted by first_page (*out is malloc'd). */
int ms_process_source_ranges(ms_page_source *s, ms_process_range **out, size_t *n);

typedef struct ms_process_stats {
    uint64_t processes;      /* tracked now */
    uint64_t tracked_pages;  /* slots backed by memory now */
    uint64_t scans;          /* PAGEMAP_SCAN calls */
    uint64_t scan_errors;    /* spans resent whole after a scan error */
    uint64_t new_spans;      /* spans discovered after construction */
    uint64_t freed_pages;    /* slots freed (memory went away) */
    uint64_t untracked_pages;/* pages reported dirty because not trackable */
    double last_dirty_s;     /* wall time of the last dirty() call */
    const char *method;      /* "preload", "inject", "mixed" or "none" */
} ms_process_stats;
void ms_process_source_stats(const ms_page_source *s, ms_process_stats *st);

/* ------------------------------------------------------------------ */
/* model: a synthetic workload in virtual time. advance(seconds) performs
 * rate * seconds page writes (fractions carry over), each picking a page by
 * the model's law; dirty() returns the distinct pages written since the
 * last call. While paused, advance() does nothing. read() returns
 * deterministic content per (page, number of writes so far) that looks like
 * real memory (zero pages, text, pointer-rich data, random bytes; a write
 * changes a few words), so codecs behave as on real memory.
 *
 *   uniform   every page equally likely;
 *   hotspot   Zipf(zipf_s) over page ranks; ranks are laid out in runs of
 *             512 pages (2 MiB) placed in a seeded order, so hot data is
 *             clustered as in real heaps but not at address 0;
 *   sweep     pages 0, 1, 2, ... in order, wrapping at npages;
 *   wws       writable working set: a contiguous hot_fraction of memory
 *             receives hot_share of the writes, the rest is uniform. */
enum ms_model_kind { MS_MODEL_UNIFORM, MS_MODEL_HOTSPOT, MS_MODEL_SWEEP, MS_MODEL_WWS };

typedef struct ms_model_opts {
    int kind;             /* ms_model_kind */
    uint64_t npages;
    double rate;          /* page writes per second (0: idle) */
    uint64_t seed;
    double zipf_s;        /* hotspot exponent; 0 means 1.0 */
    double hot_fraction;  /* wws working-set size; 0 means 0.1 */
    double hot_share;     /* wws share of writes; 0 means 0.9 */
} ms_model_opts;

/* Parse "KIND[,key=value]..." with keys size (bytes, e.g. 1G), npages,
 * rate (pages/s), seed, zipf, hot, share; e.g. "hotspot,size=4G,rate=50000". */
int ms_model_parse(const char *spec, ms_model_opts *o);
const char *ms_model_kind_name(int kind);
int ms_model_source_create(const ms_model_opts *o, ms_page_source **out);

/* ------------------------------------------------------------------ */
/* trace: recorded dirty bitmaps (format: docs/trace-format.md). A record
 * says which pages were dirtied between the previous record's time and
 * its own. The source plays them in virtual time: advance(seconds) moves
 * the clock, and a page of a record is dirtied at a fixed, seeded
 * pseudo-random point inside the record's interval, so intervals shorter
 * than the recorded ones see a proportional share. Content as for model. */

typedef struct ms_trace_writer ms_trace_writer;

/* Create (truncate) `path`; `desc` (may be NULL) is kept in the header. */
int ms_trace_writer_open(const char *path, uint64_t npages, uint32_t page_size,
                         const char *desc, ms_trace_writer **out);
/* Append the pages set in `bitmap` (nbits <= npages bits) as dirtied up to
 * t_ns, nanoseconds since tracking start; t_ns never decreases. */
int ms_trace_writer_add(ms_trace_writer *w, uint64_t t_ns, const uint64_t *bitmap, uint64_t nbits);
/* Write the end record, flush and close; frees w whatever the result. */
int ms_trace_writer_close(ms_trace_writer *w);

typedef struct ms_trace_opts {
    bool loop;       /* after the last record start over (default: idle) */
    uint64_t seed;   /* content and intra-interval placement */
} ms_trace_opts;

typedef struct ms_trace_info {
    uint64_t npages;
    uint32_t page_size;
    uint64_t records;
    uint64_t duration_ns;   /* timestamp of the last record */
    uint64_t dirty_total;   /* sum of pages over all records */
    char desc[256];
} ms_trace_info;

/* Open and fully validate a trace (opts may be NULL): corrupt or truncated
 * files fail here with MS_ERR_CORRUPT / MS_ERR_TRUNCATED, never later. */
int ms_trace_source_open(const char *path, const ms_trace_opts *opts, ms_page_source **out);
int ms_trace_source_open_mem(const void *data, size_t len, const ms_trace_opts *opts,
                             ms_page_source **out);
int ms_trace_source_info(const ms_page_source *s, ms_trace_info *info);

#ifdef __cplusplus
}
#endif
#endif
