/* `migstream replay`: send a memory image (or the built-in sample, or a
 * recorded stream) through a codec chain and transport to a receiver, in
 * rounds that re-send a changing fraction of pages, and report throughput,
 * ratio, CPU per side, and whether the receiver rebuilt the very same image.
 * A libxc stream, libxl stream or `xl save` file is carried as the Xen
 * preload carries it (pages through the codecs, the rest as opaque bytes)
 * and the receiver rebuilds the file itself, compared by hash.
 *
 * Memory stays flat however large the image: a page is never stored, it is
 * its base content (read from the file with pread, or generated) plus the
 * deterministic changes of each round that picked it; only a version
 * counter and the content hash of each page are kept (10 bytes a page). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "ms_config.h"
#include "tools/toolutil.h"
#include "xen/xen.h"

#define CMD "replay"
#define BATCH_PAGES 256u

enum source_kind { SRC_IMAGE, SRC_SAMPLE, SRC_STREAM, SRC_SAVE };

typedef struct replay_opts {
    ms_tool_net net;
    const char *image, *stream, *chain, *to, *record, *listen_addr, *format;
    enum ms_save_kind save_kind; /* not MS_SAVE_UNKNOWN: carry the file as a libxc stream */
    uint64_t sample_bytes, max_bw, seed, delta_cache, dedup_cache;
    unsigned rounds, channels, queue_depth, frame_pages;
    double mutate;
    bool rounds_given, mutate_given;
} replay_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: migstream replay (--image FILE | --sample SIZE | --stream FILE) [--rounds N --mutate F]\n"
            "                        [--format auto|image|libxc]\n"
            "                        [--chain CHAIN] [--channels N] [--workers N] [--to HOST:PORT]\n"
            "                        [--transport tcp|fd|rdma [--rdma-opts SPEC]] [--listen-addr ADDR]\n"
            "                        [--key FILE] [--max-bandwidth RATE]\n"
            "                        [--record FILE] [--json] [OPTIONS]\n"
            "\n"
            "Send a memory image through a codec chain and transport to a receiver and\n"
            "report throughput, compression ratio, CPU per side, and whether the\n"
            "receiver's reconstruction is byte-identical (image digests compared).\n"
            "Without --to, a receiver runs in this process on loopback (--listen-addr).\n"
            "\n"
            "Source (one of):\n"
            "  -i, --image FILE         a memory image (e.g. saved from /proc/PID/mem)\n"
            "  -s, --sample SIZE        the built-in mixed sample (zero pages, text, pointer-rich\n"
            "                           structures, random bytes), e.g. 1G\n"
            "  -S, --stream FILE        a stream recorded with --record: decoded, then re-sent\n"
            "      --format auto|image|libxc\n"
            "                           how to take the file of --image / --stream: libxc\n"
            "                           carries a libxc stream, libxl stream or `xl save` file\n"
            "                           as the Xen preload does (pages through the codecs,\n"
            "                           records as opaque bytes, rounds found in the stream)\n"
            "                           and checks that the receiver rebuilds the file byte for\n"
            "                           byte; image: the file as raw memory (--image) or a\n"
            "                           migstream record (--stream); auto (default): libxc\n"
            "                           when the file starts like one\n"
            "Rounds:\n"
            "  -r, --rounds N           rounds (default 1: every page once); rounds after the\n"
            "                           first re-send a fraction of the pages, changed\n"
            "  -m, --mutate F           fraction of pages changed and re-sent per later round\n"
            "                           (default 0.05)\n"
            "      --seed N             seed for the sample and the changes (default 1)\n"
            "Pipeline:\n"
            "  -c, --chain CHAIN        codec chain, e.g. zero,delta,lz4 (default) or zero,zstd:3\n"
            "  -n, --channels N         parallel connections (default 1)\n"
            "  -w, --workers N          compression threads per side (default: number of cores)\n"
            "      --queue-depth N      frames in flight per side (default 2 x workers + channels)\n"
            "      --frame-pages N      pages per frame (default 256)\n"
            "      --delta-cache SIZE   page store of the delta stage per side (default 64M)\n"
            "      --dedup-cache SIZE   content index of the dedup stage per side (default 64M;\n"
            "                           the size of the guest finds every duplicate)\n"
            "  -b, --max-bandwidth RATE cap on the wire, bytes/s (100M) or bits (1gbit)\n"
            "      --timeout DUR        peer silence that ends the session (default 10s)\n"
            "Destination:\n"
            "  -t, --to HOST:PORT       a `migstream recv` listening there (default: local)\n"
            "      --transport tcp|fd|rdma\n"
            "                           tcp (default); fd with --to - writes a one-way stream\n"
            "                           to stdout (for a pipe or ssh into `recv --transport fd`);\n"
            "                           rdma: RDMA (RoCE, InfiniBand, Soft-RoCE) to a\n"
            "                           `recv --transport rdma`, one queue pair per channel\n"
            "      --rdma-opts SPEC     rdma tuning, e.g. slots=64,slot-size=256K,ack-timeout=18,\n"
            "                           retry=7,zcopy-min=64K,reg-cache=16,timeout=10s,\n"
            "                           connect-retries=10 (any subset)\n"
            "      --listen-addr ADDR   address of the local receiver (without --to; default\n"
            "                           127.0.0.1). Needed with --transport rdma: Soft-RoCE\n"
            "                           cannot use 127.0.0.1, give an address of a netdev that\n"
            "                           has an RDMA device (e.g. the one rxe0 sits on). The\n"
            "                           local receiver takes unsealed sessions there too\n"
            "  -k, --key FILE           pre-shared key: authenticate both ends, seal every frame\n"
            "      --record FILE        also save the encoded stream (replay it with --stream,\n"
            "                           inspect it with `migstream inspect`)\n"
            "Output:\n"
            "  -j, --json               one JSON object on stdout\n"
            "  -q, --quiet              no progress line\n"
            "  -h, --help               this help\n"
            "\n"
            "Exit status: 0 identical, 1 failure, 2 usage, 3 reconstruction differs, 4 peer or\n"
            "transport failure, 5 authentication or integrity failure.\n");
}

static const char *kind_text(enum ms_save_kind k)
{
    return k == MS_SAVE_XL ? "`xl save` file" : k == MS_SAVE_LIBXL ? "libxl stream" : "libxc stream";
}

/* --format: whether the file is carried as a libxc stream (o->save_kind). */
static int save_format(replay_opts *o)
{
    const char *path = o->image ? o->image : o->stream;
    uint8_t head[MS_XL_MAGIC_SIZE];
    bool forced = !strcmp(o->format, "libxc");
    if (!forced && strcmp(o->format, "auto") && strcmp(o->format, "image"))
        return ms_tool_usage_error(CMD, "--format must be auto, image or libxc, not '%s'", o->format), -1;
    if (!path) {
        if (forced)
            return ms_tool_usage_error(CMD, "--format libxc needs --image or --stream FILE"), -1;
        return 0;
    }
    if (!strcmp(o->format, "image"))
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : pread(fd, head, sizeof head, 0);
    if (fd >= 0)
        close(fd);
    o->save_kind = n > 0 ? ms_save_detect(head, (size_t)n) : MS_SAVE_UNKNOWN;
    if (forced && !o->save_kind)
        return ms_tool_usage_error(CMD, "--format libxc: %s is not a libxc stream, libxl stream or `xl save` file%s",
                                   path, n < 0 ? " (cannot read it)" : ""), -1;
    return 0;
}

static int store_size(const char *opt, const char *arg, uint64_t *out)
{
    int rc = ms_page_store_parse(arg, out);
    if (rc < 0)
        ms_tool_usage_error(CMD, "%s '%s': %s", opt, arg ? arg : "", ms_last_error());
    return rc;
}

static int parse(int argc, char **argv, replay_opts *o)
{
    static const struct option opts[] = {
        {"image", required_argument, NULL, 'i'},    {"sample", required_argument, NULL, 's'},
        {"stream", required_argument, NULL, 'S'},   {"rounds", required_argument, NULL, 'r'},
        {"mutate", required_argument, NULL, 'm'},   {"seed", required_argument, NULL, 'E'},
        {"chain", required_argument, NULL, 'c'},    {"channels", required_argument, NULL, 'n'},
        {"queue-depth", required_argument, NULL, 'Q'}, {"frame-pages", required_argument, NULL, 'F'},
        {"max-bandwidth", required_argument, NULL, 'b'}, {"to", required_argument, NULL, 't'},
        {"record", required_argument, NULL, 'R'},   {"listen-addr", required_argument, NULL, 'L'},
        {"format", required_argument, NULL, 'Y'},   {"delta-cache", required_argument, NULL, 'D'},
        {"dedup-cache", required_argument, NULL, 'U'}, MS_TOOL_NET_LONGOPTS('X', 'O'),
    };
    int c, sources = 0;
    memset(o, 0, sizeof *o);
    o->rounds = 1;
    o->mutate = 0.05;
    o->chain = "zero,delta,lz4";
    o->channels = 1;
    o->seed = 1;
    o->net.transport = "tcp";
    o->format = "auto";
    optind = 1;
    while ((c = getopt_long(argc, argv, "i:s:S:r:m:c:n:w:b:t:k:jqh", opts, NULL)) != -1) {
        int rc = ms_tool_net_option(CMD, &o->net, c, 'X', 'O', optarg);
        switch (rc ? 0 : c) {
        case 0: break;
        case 'i': o->image = optarg; sources++; break;
        case 's': rc = ms_opt_size(CMD, "--sample", optarg, &o->sample_bytes); sources++; break;
        case 'S': o->stream = optarg; sources++; break;
        case 'r': rc = ms_opt_uint(CMD, "--rounds", optarg, 1, 65535, &o->rounds); o->rounds_given = true; break;
        case 'm': rc = ms_opt_fraction(CMD, "--mutate", optarg, &o->mutate); o->mutate_given = true; break;
        case 'E': rc = ms_opt_u64(CMD, "--seed", optarg, &o->seed); break;
        case 'c': o->chain = optarg; break;
        case 'n': rc = ms_opt_uint(CMD, "--channels", optarg, 1, MS_HELLO_MAX_CHANNELS, &o->channels); break;
        case 'Q': rc = ms_opt_uint(CMD, "--queue-depth", optarg, 1, 65536, &o->queue_depth); break;
        case 'F': rc = ms_opt_uint(CMD, "--frame-pages", optarg, 1, MS_MAX_FRAME_PAGES, &o->frame_pages); break;
        case 'b': rc = ms_opt_rate(CMD, "--max-bandwidth", optarg, &o->max_bw); break;
        case 't': o->to = optarg; break;
        case 'R': o->record = optarg; break;
        case 'L': o->listen_addr = optarg; break;
        case 'Y': o->format = optarg; break;
        case 'D': rc = store_size("--delta-cache", optarg, &o->delta_cache); break;
        case 'U': rc = store_size("--dedup-cache", optarg, &o->dedup_cache); break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
        if (rc < 0)
            return -1;
    }
    if (optind != argc)
        return ms_tool_usage_error(CMD, "unexpected argument '%s'", argv[optind]), -1;
    if (sources != 1)
        return ms_tool_usage_error(CMD, "give exactly one of --image, --sample, --stream"), -1;
    if (save_format(o) < 0)
        return -1;
    if (o->save_kind && (o->rounds_given || o->mutate_given))
        return ms_tool_usage_error(CMD, "--rounds and --mutate do not apply to a %s (its rounds are in the stream)",
                                   kind_text(o->save_kind)), -1;
    if (o->stream && (o->rounds_given || o->mutate_given))
        return ms_tool_usage_error(CMD, "--rounds and --mutate do not apply to --stream (its rounds are recorded)"), -1;
    if (o->image == NULL && o->stream == NULL && o->sample_bytes < MS_PAGE_SIZE)
        return ms_tool_usage_error(CMD, "--sample must be at least one page (4K)"), -1;
    if (ms_tool_net_check(CMD, &o->net) < 0)
        return -1;
    bool fd = o->net.fd;
    if (o->listen_addr && (o->to || fd))
        return ms_tool_usage_error(CMD, "--listen-addr is for the local receiver of --transport tcp or rdma "
                                        "(without --to)"), -1;
    if (!strcmp(o->net.transport, "rdma") && !o->to && !o->listen_addr)
        return ms_tool_usage_error(CMD, "--transport rdma without --to needs --listen-addr ADDR for the local "
                                        "receiver: an address of a netdev with an RDMA device (Soft-RoCE "
                                        "cannot use 127.0.0.1)"), -1;
    if (!strcmp(o->net.transport, "fd") && o->to && strcmp(o->to, "-"))
        return ms_tool_usage_error(CMD, "--transport fd sends to stdout: use --to - (or no --to for a local "
                                        "receiver)"), -1;
    if (o->to && !strcmp(o->to, "-") && (strcmp(o->net.transport, "fd") || o->channels != 1))
        return ms_tool_usage_error(CMD, "--to - needs --transport fd and one channel"), -1;
    return 0;
}

/* ---- the source image ----------------------------------------------------- */

typedef struct source {
    enum source_kind kind;
    const char *path;
    int fd;
    uint64_t bytes, npages;
    uint16_t *version;   /* rounds that changed each page */
    uint64_t *hash;      /* content hash of each page as last sent */
    uint64_t seed;
} source;

static int source_open(const replay_opts *o, source *src)
{
    memset(src, 0, sizeof *src);
    src->fd = -1;
    src->seed = o->seed;
    if (o->image) {
        struct stat st;
        src->kind = SRC_IMAGE;
        src->path = o->image;
        src->fd = open(o->image, O_RDONLY | O_CLOEXEC);
        if (src->fd < 0 || fstat(src->fd, &st) < 0)
            return ms_error(MS_ERR_IO, "cannot open image %s: %s", o->image, strerror(errno));
        if (st.st_size <= 0)
            return ms_error(MS_ERR_INVAL, "image %s is empty (a /proc/PID/mem range must be copied out first, "
                                          "e.g. with dd)", o->image);
        src->bytes = (uint64_t)st.st_size;
        posix_fadvise(src->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    } else {
        src->kind = SRC_SAMPLE;
        src->path = "sample";
        src->bytes = o->sample_bytes;
    }
    src->npages = (src->bytes + MS_PAGE_SIZE - 1) / MS_PAGE_SIZE;
    src->version = calloc(src->npages, sizeof *src->version);
    src->hash = calloc(src->npages, sizeof *src->hash);
    if (!src->version || !src->hash)
        return ms_error(MS_ERR_NOMEM, "out of memory for %llu pages of bookkeeping", (unsigned long long)src->npages);
    return MS_OK;
}

static void source_close(source *src)
{
    if (src->fd >= 0)
        close(src->fd);
    free(src->version);
    free(src->hash);
}

/* The change a round makes to a page: a run of new bytes, as a running
 * program writes. Deterministic, so the page is never stored. */
static void apply_change(uint8_t *p, uint64_t pfn, uint32_t v, uint64_t seed)
{
    uint64_t vs = seed ^ ((pfn * 31 + v) * 0xff51afd7ed558ccdull) ^ 0xa5a5;
    uint64_t r = ms_tool_rng(&vs);
    size_t off = r % (MS_PAGE_SIZE - 256), len = 16 + (r >> 32) % 240;
    for (size_t i = 0; i < len; i++)
        p[off + i] = (uint8_t)ms_tool_rng(&vs);
}

static int read_base(source *src, uint64_t pfn, uint8_t *buf, size_t npages)
{
    uint64_t off = pfn * MS_PAGE_SIZE, want = npages * (uint64_t)MS_PAGE_SIZE, got = 0;
    if (src->kind == SRC_SAMPLE) {
        for (size_t i = 0; i < npages; i++)
            ms_tool_sample_page(buf + i * MS_PAGE_SIZE, pfn + i, 0, src->seed);
        return MS_OK;
    }
    while (got < want && off + got < src->bytes) {
        ssize_t n = pread(src->fd, buf + got, want - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ms_error(MS_ERR_IO, "reading %s at offset %llu: %s", src->path,
                            (unsigned long long)(off + got), strerror(errno));
        if (n == 0)
            return ms_error(MS_ERR_IO, "%s shrank while being read (offset %llu)", src->path,
                            (unsigned long long)(off + got));
        got += (uint64_t)n;
    }
    /* A short last page is zero-padded, as the receiver stores it. */
    memset(buf + got, 0, want - got);
    return MS_OK;
}

/* Fill buf with the current content of npages pages from pfn on. */
static int read_pages(source *src, uint64_t pfn, uint8_t *buf, size_t npages)
{
    int rc = read_base(src, pfn, buf, npages);
    for (size_t i = 0; rc == MS_OK && i < npages; i++) {
        for (uint32_t v = 1; v <= src->version[pfn + i]; v++)
            apply_change(buf + i * MS_PAGE_SIZE, pfn + i, v, src->seed);
        src->hash[pfn + i] = XXH3_64bits(buf + i * MS_PAGE_SIZE, MS_PAGE_SIZE);
    }
    return rc;
}

/* ---- sending ------------------------------------------------------------- */

typedef struct progress_state {
    ms_progress bar;
    uint64_t pages_total, pages_done;
    uint32_t round;
} progress_state;

static void show(progress_state *ps, bool force)
{
    double secs = (double)(ms_now_ns() - ps->bar.t0) / 1e9;
    ms_progress_update(&ps->bar, force, "replay: round %u, %llu/%llu pages, %.0f MiB/s", ps->round,
                       (unsigned long long)ps->pages_done, (unsigned long long)ps->pages_total,
                       secs > 0 ? (double)ps->pages_done * MS_PAGE_SIZE / secs / 1048576.0 : 0.0);
}

static int send_all_pages(ms_sender *s, source *src, uint8_t *buf, progress_state *ps)
{
    uint64_t pfns[BATCH_PAGES];
    for (uint64_t pfn = 0; pfn < src->npages; pfn += BATCH_PAGES) {
        size_t n = src->npages - pfn < BATCH_PAGES ? (size_t)(src->npages - pfn) : BATCH_PAGES;
        int rc = read_pages(src, pfn, buf, n);
        for (size_t i = 0; i < n; i++)
            pfns[i] = pfn + i;
        if (rc == MS_OK)
            rc = ms_sender_pages(s, 0, (uint32_t)(pfn / BATCH_PAGES), pfns, buf, n);
        if (rc < 0)
            return rc;
        ps->pages_done += n;
        show(ps, false);
    }
    return MS_OK;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A later round: a random fraction of the pages changes and is re-sent,
 * in address order as a dirty bitmap would give them. */
static int send_changed(ms_sender *s, source *src, uint32_t round, double mutate, uint64_t *rng, uint64_t *pick,
                        uint8_t *buf, progress_state *ps)
{
    uint64_t k = (uint64_t)(mutate * (double)src->npages + 0.5);
    uint64_t pfns[BATCH_PAGES];
    if (k > src->npages)
        k = src->npages;
    for (uint64_t i = 0; i < src->npages; i++)
        pick[i] = i;
    for (uint64_t i = 0; i < k; i++) {
        uint64_t j = i + ms_tool_rng(rng) % (src->npages - i), t = pick[i];
        pick[i] = pick[j];
        pick[j] = t;
    }
    qsort(pick, k, sizeof *pick, cmp_u64);
    for (uint64_t i = 0; i < k; i += BATCH_PAGES) {
        size_t n = k - i < BATCH_PAGES ? (size_t)(k - i) : BATCH_PAGES;
        for (size_t j = 0; j < n; j++) {
            uint64_t pfn = pick[i + j];
            if (src->version[pfn] == UINT16_MAX)
                return ms_error(MS_ERR_LIMIT, "page %llu changed more than 65535 times", (unsigned long long)pfn);
            src->version[pfn]++;
            pfns[j] = pfn;
            int rc = read_pages(src, pfn, buf + j * MS_PAGE_SIZE, 1);
            if (rc < 0)
                return rc;
        }
        int rc = ms_sender_pages(s, round, (uint32_t)(pfns[0] / BATCH_PAGES), pfns, buf, n);
        if (rc < 0)
            return rc;
        ps->pages_done += n;
        show(ps, false);
    }
    return MS_OK;
}

static int send_image(ms_sender *s, source *src, const replay_opts *o, progress_state *ps)
{
    uint8_t *buf = malloc((size_t)BATCH_PAGES * MS_PAGE_SIZE);
    uint64_t *pick = o->rounds > 1 ? malloc(src->npages * sizeof *pick) : NULL;
    uint64_t rng = o->seed * 0x2545f4914f6cdd1dull + 7;
    int rc = MS_OK;
    if (!buf || (o->rounds > 1 && !pick)) {
        rc = ms_error(MS_ERR_NOMEM, "out of memory");
        goto out;
    }
    uint64_t per_round = (uint64_t)(o->mutate * (double)src->npages + 0.5);
    ps->pages_total = src->npages + (o->rounds - 1) * (per_round > src->npages ? src->npages : per_round);
    for (uint32_t round = 0; round < o->rounds && rc == MS_OK; round++) {
        ps->round = round;
        rc = round == 0 ? send_all_pages(s, src, buf, ps) : send_changed(s, src, round, o->mutate, &rng, pick, buf, ps);
        if (rc == MS_OK)
            rc = ms_sender_round_end(s, round);
        show(ps, true);
    }
out:
    free(buf);
    free(pick);
    return rc;
}

/* ---- replaying a recorded stream: decode it and feed the sender ------------ */

typedef struct resend {
    ms_sender *s;
    ms_digest_sink digest; /* the source image as the record rebuilds it */
    progress_state *ps;
    bool round_open, any_end;
    uint32_t cur_round, last_end;
    ms_buf pending;        /* opaque bytes seen between rounds */
} resend;

/* Opaque records carry no round: they join the round whose data follows. */
static int flush_pending(resend *r, uint32_t round)
{
    int rc = MS_OK;
    if (r->pending.len)
        rc = ms_sender_opaque(r->s, round, r->pending.data, r->pending.len);
    r->pending.len = 0;
    return rc;
}

static int resend_pages(void *ctx, uint32_t round, uint32_t fragment, const uint64_t *pfns, const uint8_t *pages,
                        size_t count, size_t ps)
{
    resend *r = ctx;
    int rc = ms_digest_sink_ops.pages(&r->digest, round, fragment, pfns, pages, count, ps);
    if (rc == MS_OK)
        rc = flush_pending(r, round);
    if (rc == MS_OK)
        rc = ms_sender_pages(r->s, round, fragment, pfns, pages, count);
    r->round_open = true;
    r->cur_round = round;
    r->ps->round = round;
    r->ps->pages_done += count;
    show(r->ps, false);
    return rc;
}

static int resend_opaque(void *ctx, const uint8_t *data, size_t len)
{
    resend *r = ctx;
    int rc = ms_digest_sink_ops.opaque(&r->digest, data, len);
    if (rc < 0 || !len)
        return rc;
    if (r->round_open)
        return ms_sender_opaque(r->s, r->cur_round, data, len);
    return ms_buf_append(&r->pending, data, len);
}

static int resend_round_end(void *ctx, uint32_t round)
{
    resend *r = ctx;
    int rc = flush_pending(r, round);
    if (rc == MS_OK)
        rc = ms_sender_round_end(r->s, round);
    r->round_open = false;
    r->any_end = true;
    r->last_end = round;
    show(r->ps, true);
    return rc;
}

static int resend_end(void *ctx)
{
    resend *r = ctx;
    return flush_pending(r, r->round_open ? r->cur_round : (r->any_end ? r->last_end + 1 : 0));
}

static const ms_sink_ops resend_ops = {resend_pages, resend_opaque, resend_round_end, resend_end};

/* The hello at the start of a record says its page size and chain. */
static int peek_record(const char *path, ms_hello *h)
{
    uint8_t b[MS_HELLO_SIZE];
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc;
    if (fd < 0)
        return ms_error(MS_ERR_IO, "cannot open stream %s: %s", path, strerror(errno));
    ssize_t n = pread(fd, b, sizeof b, 0);
    close(fd);
    if (n >= 8 && ms_get_le64(b) == UINT64_MAX)
        return ms_error(MS_ERR_UNSUPPORTED, "%s is a libxc migration stream, not a migstream record: replay it "
                                            "with --format libxc (or auto)", path);
    if (n != (ssize_t)sizeof b)
        return ms_error(MS_ERR_TRUNCATED, "%s is too short to be a migstream record", path);
    if ((rc = ms_hello_unpack(b, h)) < 0)
        return ms_error_wrap(rc, "%s is not a migstream record", path);
    return MS_OK;
}

/* ---- carrying a libxc stream / libxl stream / xl save file ---------------- */

/* The file as sent (up to its final END) and as the receiver rebuilt it:
 * hashes and lengths, compared at the end. */
typedef struct save_run {
    ms_save_to_sender ts;
    XXH3_state_t *src_hash, *rx_hash;
    uint64_t src_bytes, rx_bytes, file_bytes;
    ms_save_writer *writer;
} save_run;

static int rebuilt_out(void *ctx, const void *data, size_t len)
{
    save_run *sr = ctx;
    XXH3_64bits_update(sr->rx_hash, data, len);
    sr->rx_bytes += len;
    return MS_OK;
}

static int save_run_init(save_run *sr)
{
    sr->src_hash = XXH3_createState();
    sr->rx_hash = XXH3_createState();
    if (!sr->src_hash || !sr->rx_hash)
        return ms_error(MS_ERR_NOMEM, "out of memory");
    XXH3_64bits_reset(sr->src_hash);
    XXH3_64bits_reset(sr->rx_hash);
    return ms_save_writer_new(rebuilt_out, sr, &sr->writer);
}

static void save_run_free(save_run *sr)
{
    XXH3_freeState(sr->src_hash);
    XXH3_freeState(sr->rx_hash);
    ms_save_writer_free(sr->writer);
}

/* Whole chunks into the reader: it takes bytes up to the final END and
 * says where that was; what follows is not part of the stream. */
static int pump_save(ms_save_reader *r, int fd, uint8_t *buf, size_t cap, save_run *sr, progress_state *ps)
{
    while (!ms_save_reader_done(r)) {
        ssize_t got = read(fd, buf, cap);
        size_t used = 0;
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return ms_error(MS_ERR_IO, "read: %s", strerror(errno));
        if (got == 0)
            return ms_save_reader_finish(r);
        int rc = ms_save_reader_push(r, buf, (size_t)got, &used);
        XXH3_64bits_update(sr->src_hash, buf, used);
        sr->src_bytes += used;
        ps->pages_done = sr->ts.data_pages;
        ps->round = sr->ts.ts.round;
        show(ps, false);
        if (rc < 0)
            return rc;
    }
    return MS_OK;
}

static int send_save(ms_sender *s, const char *path, save_run *sr, progress_state *ps)
{
    enum { CHUNK = 1 << 20 };
    struct stat st;
    ms_save_reader *r = NULL;
    uint8_t *buf = malloc(CHUNK);
    int rc, fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        rc = ms_error(MS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    if (!buf) {
        rc = ms_error(MS_ERR_NOMEM, "out of memory");
        goto out;
    }
    sr->file_bytes = (uint64_t)st.st_size;
    sr->ts.ts.sender = s;
    ps->pages_total = sr->file_bytes / MS_XC_PAGE_SIZE;
    if ((rc = ms_save_reader_new(&ms_save_reader_to_sender_cb, &sr->ts, 0, &r)) < 0)
        goto out;
    rc = pump_save(r, fd, buf, CHUNK, sr, ps);
    if (rc == MS_OK)
        rc = ms_save_to_sender_end(&sr->ts);
    else
        ms_error_wrap(rc, "%s", path);
    show(ps, true);
out:
    ms_save_reader_free(r);
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* ---- the local receiver ----------------------------------------------------- */

typedef struct local_rx {
    ms_listener *l;
    ms_conn *conns[MS_HELLO_MAX_CHANNELS];
    unsigned n;
    ms_session_config cfg;
    ms_digest_sink digest;
    const ms_sink_ops *sink; /* what the receiver rebuilds: digest or sink_ctx */
    void *sink_ctx;
    ms_stats stats;
    int rc;
    char msg[512];
    pthread_t thread;
    bool started;
} local_rx;

static void *local_rx_main(void *arg)
{
    local_rx *r = arg;
    int rc;
    if (r->l) {
        ms_accepted a;
        rc = ms_accept_session(r->l, &r->cfg, 30000, &a);
        if (rc == MS_OK)
            rc = ms_receiver_run(&r->cfg, &a.hello, a.conns, a.keys, a.nconns, r->sink, r->sink_ctx, &r->stats);
        if (rc < 0)
            snprintf(r->msg, sizeof r->msg, "%s", ms_last_error());
        ms_accepted_free(&a);
        /* Closing drops channels still queued, so a sender waiting on a
         * receiver that gave up hears it now, not at its timeout. */
        ms_listener_close(r->l);
        r->l = NULL;
    } else {
        ms_hello first = {0};
        ms_session_keys *keys = calloc(r->n, sizeof *keys);
        rc = keys ? MS_OK : ms_error(MS_ERR_NOMEM, "out of memory");
        for (unsigned i = 0; i < r->n && rc == MS_OK; i++) {
            ms_hello peer, mine = {.version = MS_WIRE_VERSION, .role = MS_ROLE_RECEIVER};
            rc = ms_handshake_server_read(r->conns[i], &peer);
            if (rc == MS_OK)
                rc = ms_handshake_server_finish(r->conns[i], &peer, &mine, r->cfg.key, &keys[i]);
            if (i == 0)
                first = peer;
        }
        if (rc == MS_OK)
            rc = ms_receiver_run(&r->cfg, &first, r->conns, keys, r->n, r->sink, r->sink_ctx, &r->stats);
        if (rc < 0)
            snprintf(r->msg, sizeof r->msg, "%s", ms_last_error());
        free(keys);
        for (unsigned i = 0; i < r->n; i++) {
            ms_conn_close(r->conns[i]);
            r->conns[i] = NULL;
        }
    }
    r->rc = rc;
    return NULL;
}

/* "ADDR:PORT" ("[ADDR]:PORT" for an IPv6 literal) of the local receiver. */
static int local_addr(const char *addr, unsigned port, char *out, size_t n)
{
    bool v6 = strchr(addr, ':') && addr[0] != '[';
    int len = snprintf(out, n, v6 ? "[%s]:%u" : "%s:%u", addr, port);
    if (len < 0 || (size_t)len >= n)
        return ms_error(MS_ERR_INVAL, "--listen-addr '%.40s...' is too long", addr);
    return MS_OK;
}

/* Sender-side connections, and the local receiver when there is no --to. */
static int connect_all(const replay_opts *o, ms_conn **snd, local_rx *r)
{
    int rc;
    if (o->to && !strcmp(o->to, "-"))
        return ms_fd_conn_new(-1, STDOUT_FILENO, false, &snd[0]);
    if (o->to)
        return ms_tool_connect_via(o->net.transport, o->net.rdma_opts, o->to, o->channels, o->net.timeout_ms, snd);
    r->n = o->channels;
    if (strcmp(o->net.transport, "fd")) {
        char where[300];
        if ((rc = local_addr(o->listen_addr ? o->listen_addr : "127.0.0.1", 0, where, sizeof where)) < 0 ||
            (rc = ms_tool_listen_via(o->net.transport, o->net.rdma_opts, where, o->net.timeout_ms, &r->l)) < 0 ||
            (rc = local_addr(o->listen_addr ? o->listen_addr : "127.0.0.1", r->l->port, where, sizeof where)) < 0)
            return rc;
        return ms_tool_connect_via(o->net.transport, o->net.rdma_opts, where, o->channels, o->net.timeout_ms, snd);
    }
    for (unsigned i = 0; i < o->channels; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            return ms_error(MS_ERR_IO, "socketpair: %s", strerror(errno));
        if ((rc = ms_fd_conn_new(sv[0], sv[0], true, &snd[i])) < 0 ||
            (rc = ms_fd_conn_new(sv[1], sv[1], true, &r->conns[i])) < 0)
            return rc;
    }
    return MS_OK;
}

/* ---- report ------------------------------------------------------------------ */

typedef struct outcome {
    int rc;
    char msg[512];
    uint64_t src_digest, rx_digest;
    bool local, identical, acked;
    double wall_s;
    const ms_stats *tx;
    const ms_stats *rx;
    uint64_t pages;
    const save_run *save; /* a libxc stream / xl save file was carried */
    bool have_auto;       /* chain auto: what it chose */
    ms_auto_stats auto_st;
} outcome;

static void report_json(const replay_opts *o, const source *src, const outcome *out, const char *chain)
{
    FILE *f = stdout;
    const ms_round_stats *t = &out->tx->total;
    fputs("{\"source\":{\"kind\":", f);
    ms_json_str(f, src->kind == SRC_SAVE ? ms_save_kind_name(o->save_kind)
                   : src->kind == SRC_IMAGE ? "image" : src->kind == SRC_SAMPLE ? "sample" : "stream");
    fputs(",\"path\":", f);
    ms_json_str(f, src->path);
    fprintf(f, ",\"bytes\":%" PRIu64 ",\"pages\":%" PRIu64, src->bytes, out->pages);
    if (out->save)
        fprintf(f, ",\"libxc_records\":%" PRIu64 ",\"libxl_records\":%" PRIu64 ",\"stream_bytes\":%" PRIu64
                   ",\"rebuilt_bytes\":%" PRIu64 ",\"trailing_bytes\":%" PRIu64,
                out->save->ts.xc_records, out->save->ts.libxl_records, out->save->src_bytes, out->save->rx_bytes,
                out->save->file_bytes > out->save->src_bytes ? out->save->file_bytes - out->save->src_bytes : 0);
    fputs("},\"chain\":", f);
    ms_json_str(f, chain);
    fprintf(f, ",\"channels\":%u,\"workers\":%u,\"rounds\":%zu,\"mutate\":%.4f,\"transport\":", o->channels,
            o->net.workers, out->tx->nrounds, o->mutate);
    ms_json_str(f, o->net.transport);
    fputs(",\"to\":", f);
    ms_json_str(f, o->to ? o->to : "local");
    fprintf(f, ",\"sealed\":%s,\"max_bandwidth\":%" PRIu64 ",\"result\":\"%s\"", o->net.have_key ? "true" : "false",
            o->max_bw, out->rc == MS_OK ? (out->identical || !out->local ? "ok" : "differs") : "error");
    if (out->rc < 0) {
        fputs(",\"error\":", f);
        ms_json_error(f, out->rc, out->msg);
    }
    double wall = out->wall_s;
    fprintf(f, ",\"identical\":%s,\"receiver_acknowledged_stream\":%s,\"source_digest\":\"%016" PRIx64 "\"",
            out->identical ? "true" : "false", out->acked ? "true" : "false", out->src_digest);
    if (out->local)
        fprintf(f, ",\"receiver_digest\":\"%016" PRIx64 "\"", out->rx_digest);
    fprintf(f, ",\"wall_s\":%.6f,\"raw_MiBps\":%.2f,\"wire_MiBps\":%.2f,\"ratio\":%.4f,\"cpu_sender_s\":%.4f",
            wall, wall > 0 ? (double)t->raw_bytes / wall / 1048576.0 : 0.0,
            wall > 0 ? (double)t->wire_bytes / wall / 1048576.0 : 0.0,
            t->wire_bytes ? (double)t->raw_bytes / (double)t->wire_bytes : 0.0, out->tx->cpu_s);
    if (out->rx)
        fprintf(f, ",\"cpu_receiver_s\":%.4f", out->rx->cpu_s);
    if (out->have_auto) {
        fputs(",\"auto\":", f);
        ms_auto_stats_json(&out->auto_st, f);
    }
    fputs(",\"sender\":", f);
    ms_stats_json(out->tx, f);
    if (out->rx) {
        fputs(",\"receiver\":", f);
        ms_stats_json(out->rx, f);
    }
    fputs("}\n", f);
}

static void report_text(const replay_opts *o, const source *src, const outcome *out, const char *chain)
{
    FILE *f = stdout;
    char b[32];
    const ms_round_stats *t = &out->tx->total;
    double wall = out->wall_s;
    fprintf(f, "replay: %s %s (%s, %" PRIu64 " pages), %zu round%s",
            src->kind == SRC_SAVE ? kind_text(o->save_kind) : src->kind == SRC_STREAM ? "stream"
            : src->kind == SRC_IMAGE ? "image" : "built-in",
            src->path, ms_tool_bytes(src->kind == SRC_STREAM ? out->pages * MS_PAGE_SIZE : src->bytes, b, sizeof b),
            out->pages, out->tx->nrounds, out->tx->nrounds == 1 ? "" : "s");
    if (out->save)
        fprintf(f, " found in the stream; %" PRIu64 " libxc and %" PRIu64 " libxl records as opaque bytes",
                out->save->ts.xc_records, out->save->ts.libxl_records);
    if (src->kind != SRC_STREAM && src->kind != SRC_SAVE && o->rounds > 1)
        fprintf(f, ", %.1f%% of pages changed per later round", 100.0 * o->mutate);
    fprintf(f, "\nchain %s, %u channel%s over %s to %s, %s\n", chain, o->channels, o->channels == 1 ? "" : "s",
            o->net.transport, o->to ? o->to : "a local receiver", o->net.have_key ? "sealed" : "not sealed");
    ms_stats_print(out->tx, "sender", f);
    if (out->rx)
        ms_stats_print(out->rx, "receiver", f);
    fprintf(f, "throughput: %.1f MiB/s of memory (raw), %.1f MiB/s on the wire, ratio %.2f\n",
            wall > 0 ? (double)t->raw_bytes / wall / 1048576.0 : 0.0,
            wall > 0 ? (double)t->wire_bytes / wall / 1048576.0 : 0.0,
            t->wire_bytes ? (double)t->raw_bytes / (double)t->wire_bytes : 0.0);
    fprintf(f, "CPU: sender %.2f s", out->tx->cpu_s);
    if (out->rx)
        fprintf(f, ", receiver %.2f s", out->rx->cpu_s);
    const char *what = out->save ? "file" : "image";
    fprintf(f, "\nsource %s digest   %016" PRIx64 "\n", what, out->src_digest);
    if (out->save && out->save->file_bytes > out->save->src_bytes)
        fprintf(f, "(%" PRIu64 " bytes after the final END are not part of the stream: not sent)\n",
                out->save->file_bytes - out->save->src_bytes);
    if (out->local)
        fprintf(f, "receiver %s digest %016" PRIx64 ": %s\n", what, out->rx_digest,
                out->identical ? "byte-identical" : "DIFFERS");
    else if (out->acked)
        fprintf(f, "the receiver acknowledged the whole stream (every frame delivered and its hash verified);\n"
                   "compare the image digest `migstream recv` printed with the source digest above\n");
    if (out->rc < 0)
        fprintf(f, "result: FAILED: %s\n", out->msg);
}

/* ---- main ---------------------------------------------------------------------- */

static ms_session_config session_cfg(const replay_opts *o, ms_conn *record)
{
    ms_session_config cfg = {
        .workers = o->net.workers,
        .queue_depth = o->queue_depth,
        .frame_pages = o->frame_pages,
        .timeout_ms = o->net.timeout_ms,
        .max_bandwidth = o->max_bw,
        .delta_cache_bytes = o->delta_cache,
        .dedup_bytes = o->dedup_cache,
        .key = o->net.have_key ? o->net.key : NULL,
        .oneway = o->to && !strcmp(o->to, "-"),
        .record = record,
    };
    return cfg;
}

static int open_record(const char *path, ms_conn **out)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return ms_error(MS_ERR_IO, "cannot create record %s: %s", path, strerror(errno));
    int rc = ms_fd_conn_new(-1, fd, true, out);
    if (rc < 0)
        close(fd);
    return rc;
}

/* Everything the sending side does; the caller reports. */
static int run(replay_opts *o, source *src, local_rx *lr, outcome *out, ms_sender **sp, resend *rs,
               progress_state *ps, ms_stats *decode_stats, save_run *sr)
{
    ms_conn **snd = calloc(o->channels, sizeof *snd);
    ms_conn *record = NULL;
    ms_session_config cfg;
    ms_hello rec_hello;
    int rc;

    if (!snd)
        return ms_error(MS_ERR_NOMEM, "out of memory");
    if (o->stream && !o->save_kind && (rc = peek_record(o->stream, &rec_hello)) < 0)
        goto out;
    if (o->record && (rc = open_record(o->record, &record)) < 0)
        goto out;
    cfg = session_cfg(o, record);
    if (o->stream && !o->save_kind)
        cfg.page_size = rec_hello.page_size;
    if ((rc = ms_chain_parse(o->chain, &cfg.chain)) < 0)
        goto out;
    if ((rc = connect_all(o, snd, lr)) < 0)
        goto out;
    lr->cfg = session_cfg(o, NULL);
    /* Our own sender is the peer, even when --listen-addr is reachable from
     * other hosts (as rdma needs): a stranger could at worst spoil the
     * comparison, which then reports DIFFERS. */
    lr->cfg.insecure = true;
    if (!o->to) {
        if (pthread_create(&lr->thread, NULL, local_rx_main, lr)) {
            rc = ms_error(MS_ERR_NOMEM, "cannot start the local receiver");
            goto out;
        }
        lr->started = true;
    }
    uint64_t t0 = ms_now_ns();
    rc = ms_sender_open(&cfg, snd, o->channels, sp);
    free(snd);
    snd = NULL;
    if (rc < 0)
        goto out;
    if (o->save_kind) {
        rc = send_save(*sp, src->path, sr, ps);
    } else if (o->stream) {
        ms_conn *in = NULL;
        int fd = open(o->stream, O_RDONLY | O_CLOEXEC);
        rs->s = *sp;
        rs->ps = ps;
        src->npages = 0;
        if (fd < 0)
            rc = ms_error(MS_ERR_IO, "cannot open stream %s: %s", o->stream, strerror(errno));
        else if ((rc = ms_fd_conn_new(fd, -1, true, &in)) < 0)
            close(fd);
        if (rc == MS_OK) {
            ms_session_config dcfg = {.workers = o->net.workers, .key = o->net.have_key ? o->net.key : NULL};
            rc = ms_receive_stream(in, &dcfg, &resend_ops, rs, decode_stats, NULL);
            if (rc < 0)
                ms_error_wrap(rc, "decoding %s", o->stream);
        }
        ms_conn_close(in);
    } else {
        rc = send_image(*sp, src, o, ps);
    }
    if (rc == MS_OK)
        rc = ms_sender_finish(*sp);
    out->wall_s = (double)(ms_now_ns() - t0) / 1e9;
    if (rc < 0)
        ms_sender_abort(*sp, ms_last_error());
out:
    free(snd);
    if (rc < 0 && !out->msg[0])
        snprintf(out->msg, sizeof out->msg, "%s", ms_last_error());
    if (*sp && rc < 0) {
        /* Stop the session now, so the local receiver ends too. */
        ms_sender_free(*sp);
        *sp = NULL;
    }
    ms_conn_close(record);
    return rc;
}

int cmd_replay(int argc, char **argv)
{
    replay_opts o;
    source src;
    local_rx lr;
    outcome out;
    resend rs;
    progress_state ps;
    ms_stats decode_stats = {0}, empty = {0};
    save_run sr;
    ms_sender *s = NULL;
    char chain_text[MS_CHAIN_TEXT_MAX];
    ms_chain ch;
    int rc, p = parse(argc, argv, &o);

    if (p)
        return p > 0 ? MS_EXIT_OK : MS_EXIT_USAGE;
    if (ms_chain_parse(o.chain, &ch) < 0)
        return ms_tool_usage_error(CMD, "--chain: %s", ms_last_error());
    ms_chain_format(&ch, chain_text, sizeof chain_text);
    if (!o.net.workers) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.net.workers = n > 0 ? (unsigned)n : 1;
    }
    if ((rc = ms_tool_net_load_key(CMD, &o.net)) != MS_EXIT_OK)
        return rc;
    memset(&lr, 0, sizeof lr);
    memset(&out, 0, sizeof out);
    memset(&rs, 0, sizeof rs);
    memset(&ps, 0, sizeof ps);
    ms_progress_init(&ps.bar, o.net.quiet || o.net.json);
    memset(&src, 0, sizeof src);
    memset(&sr, 0, sizeof sr);
    src.fd = -1;
    lr.sink = &ms_digest_sink_ops;
    lr.sink_ctx = &lr.digest;
    if (o.save_kind) {
        src.kind = SRC_SAVE;
        src.path = o.image ? o.image : o.stream;
        rc = save_run_init(&sr);
        lr.sink = &ms_save_writer_sink_ops;
        lr.sink_ctx = sr.writer;
    } else if (o.stream) {
        src.kind = SRC_STREAM;
        src.path = o.stream;
        rc = MS_OK;
    } else {
        rc = source_open(&o, &src);
        ps.pages_total = src.npages;
    }
    if (rc == MS_OK)
        rc = run(&o, &src, &lr, &out, &s, &rs, &ps, &decode_stats, &sr);
    ms_progress_done(&ps.bar);
    out.rc = rc;
    if (rc < 0 && !out.msg[0])
        snprintf(out.msg, sizeof out.msg, "%s", ms_last_error());
    if (lr.started) {
        pthread_join(lr.thread, NULL);
        /* The receiver's own error is the better explanation when it failed
         * first (it told the sender, whose message then says "aborted"). */
        if (lr.rc < 0 && (rc == MS_OK || rc == MS_ERR_ABORTED || rc == MS_ERR_CLOSED)) {
            out.rc = rc = lr.rc;
            snprintf(out.msg, sizeof out.msg, "receiver: %.500s", lr.msg);
        }
    }
    out.rx_digest = ms_digest_sink_value(&lr.digest);
    if (o.save_kind) {
        out.save = &sr;
        out.src_digest = sr.src_hash ? XXH3_64bits_digest(sr.src_hash) : 0;
        out.rx_digest = sr.rx_hash ? XXH3_64bits_digest(sr.rx_hash) : 0;
        out.pages = sr.ts.data_pages;
        src.bytes = sr.file_bytes;
    } else if (o.stream) {
        out.src_digest = ms_digest_sink_value(&rs.digest);
        out.pages = rs.digest.npages;
    } else {
        out.src_digest = ms_page_hashes_digest(src.hash, src.npages);
        out.pages = src.npages;
    }
    /* No receiver digest to show when the local receiver never started. */
    out.local = !o.to && lr.started;
    out.tx = s ? ms_sender_stats(s) : &empty;
    out.rx = out.local ? &lr.stats : NULL;
    out.acked = rc == MS_OK && s && ms_sender_stats(s)->verified;
    out.have_auto = s && ms_sender_auto_stats(s, &out.auto_st);
    out.identical = rc == MS_OK && out.local && out.rx_digest == out.src_digest && lr.rc == MS_OK &&
                    (!o.save_kind || (sr.rx_bytes == sr.src_bytes && ms_save_writer_done(sr.writer)));
    if (o.net.json)
        report_json(&o, &src, &out, chain_text);
    else
        report_text(&o, &src, &out, chain_text);
    if (rc < 0 && !o.net.json)
        fprintf(stderr, "migstream replay: %s\n", out.msg);
    int code = rc < 0 ? ms_exit_code(rc) : (out.local && !out.identical ? MS_EXIT_VERIFY : MS_EXIT_OK);
    ms_sender_free(s);
    ms_listener_close(lr.l);
    for (unsigned i = 0; i < lr.n; i++)
        ms_conn_close(lr.conns[i]);
    ms_stats_free(&lr.stats);
    ms_stats_free(&decode_stats);
    ms_digest_sink_free(&lr.digest);
    ms_digest_sink_free(&rs.digest);
    ms_buf_free(&rs.pending);
    save_run_free(&sr);
    source_close(&src);
    return code;
}
