/* Shared helpers of the migstream subcommands (see toolutil.h). */
#include "tools/toolutil.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ms_config.h"
#include "tcp/tcp.h"
#if MS_HAVE_RDMA
#include "rdma/rdma.h"
#endif

int ms_tool_fail(const char *cmd, int rc)
{
    const char *msg = ms_last_error();
    fprintf(stderr, "migstream %s: %s\n", cmd, msg && *msg ? msg : ms_strerror(rc));
    return ms_exit_code(rc);
}

int ms_tool_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "migstream %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see migstream %s --help)\n", cmd);
    return MS_EXIT_USAGE;
}

static int bad_value(const char *cmd, const char *opt, const char *arg, const char *want)
{
    ms_tool_usage_error(cmd, "%s '%s': expected %s", opt, arg, want);
    return ms_error(MS_ERR_INVAL, "%s '%s': expected %s", opt, arg, want);
}

int ms_opt_u64(const char *cmd, const char *opt, const char *arg, uint64_t *out)
{
    char *end;
    if (!arg || !*arg || *arg == '-')
        return bad_value(cmd, opt, arg ? arg : "", "a non-negative integer");
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (errno || *end)
        return bad_value(cmd, opt, arg, "a non-negative integer");
    *out = v;
    return MS_OK;
}

int ms_opt_uint(const char *cmd, const char *opt, const char *arg, unsigned min, unsigned max, unsigned *out)
{
    uint64_t v = 0;
    char want[64];
    snprintf(want, sizeof want, "an integer in %u..%u", min, max);
    if (ms_opt_u64(cmd, opt, arg, &v) < 0 || v < min || v > max)
        return bad_value(cmd, opt, arg, want);
    *out = (unsigned)v;
    return MS_OK;
}

int ms_opt_fraction(const char *cmd, const char *opt, const char *arg, double *out)
{
    char *end;
    double v = arg ? strtod(arg, &end) : -1;
    if (!arg || *end || !(v >= 0.0 && v <= 1.0))
        return bad_value(cmd, opt, arg ? arg : "", "a fraction between 0 and 1");
    *out = v;
    return MS_OK;
}

int ms_opt_size(const char *cmd, const char *opt, const char *arg, uint64_t *out)
{
    if (!arg || ms_parse_size(arg, out) < 0)
        return bad_value(cmd, opt, arg ? arg : "", "a size such as 512M or 4GiB");
    return MS_OK;
}

int ms_opt_rate(const char *cmd, const char *opt, const char *arg, uint64_t *out)
{
    if (!arg || ms_parse_rate(arg, out) < 0)
        return bad_value(cmd, opt, arg ? arg : "", "a rate in bytes/s such as 100M, or 1gbit");
    return MS_OK;
}

int ms_opt_duration(const char *cmd, const char *opt, const char *arg, uint64_t *ms)
{
    if (!arg || ms_parse_duration_ms(arg, ms) < 0)
        return bad_value(cmd, opt, arg ? arg : "", "a duration such as 10s or 500ms");
    return MS_OK;
}

/* ---- progress ------------------------------------------------------------ */

void ms_progress_init(ms_progress *p, bool quiet)
{
    p->on = !quiet && ms_tty_progress();
    p->t0 = ms_now_ns();
    p->last = 0;
}

void ms_progress_update(ms_progress *p, bool force, const char *fmt, ...)
{
    if (!p || !p->on)
        return;
    uint64_t now = ms_now_ns();
    if (!force && now - p->last < 100000000ull)
        return;
    p->last = now;
    va_list ap;
    va_start(ap, fmt);
    fputs("\r\033[K", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

void ms_progress_done(ms_progress *p)
{
    if (p && p->on && p->last) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

/* ---- JSON ---------------------------------------------------------------- */

void ms_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void ms_json_error(FILE *f, int rc, const char *msg)
{
    fprintf(f, "{\"code\":%d,\"name\":", rc);
    ms_json_str(f, ms_strerror(rc));
    fputs(",\"message\":", f);
    ms_json_str(f, msg);
    fputc('}', f);
}

/* ---- connections ---------------------------------------------------------- */

int ms_tool_connect(const char *hostport, unsigned n, uint64_t timeout_ms, ms_conn **conns)
{
    char host[256], port[32];
    ms_tcp_options opt = {.timeout_ms = timeout_ms, .connect_retries = 3};
    int rc = ms_split_hostport(hostport, host, sizeof host, port, sizeof port);
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < n; i++) {
        if ((rc = ms_tcp_connect(host, port, &opt, &conns[i])) < 0) {
            for (unsigned j = 0; j < i; j++) {
                ms_conn_close(conns[j]);
                conns[j] = NULL;
            }
            return ms_error_wrap(rc, "connecting channel %u to %s", i, hostport);
        }
    }
    return MS_OK;
}

int ms_tool_listen(const char *hostport, uint64_t timeout_ms, ms_listener **l)
{
    char host[256], port[32];
    ms_tcp_options opt = {.timeout_ms = timeout_ms};
    int rc = ms_split_hostport(hostport, host, sizeof host, port, sizeof port);
    if (rc < 0)
        return rc;
    return ms_tcp_listen(host, port, &opt, l);
}

/* ---- transports by name -------------------------------------------------- */

/* Soft-RoCE retransmits even on one host, so a peer that is still starting
 * its listener gets a few more chances than over tcp. */
#define RDMA_CONNECT_RETRIES 10u

#if MS_HAVE_RDMA
static int rdma_opts(const char *spec, uint64_t timeout_ms, ms_rdma_options *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = timeout_ms;
    o->connect_retries = RDMA_CONNECT_RETRIES;
    int rc = spec ? ms_rdma_options_parse(spec, o) : MS_OK;
    return rc < 0 ? ms_error_wrap(rc, "--rdma-opts") : MS_OK;
}
#endif

int ms_tool_check_transport(const char *cmd, const char *transport, const char *rdma_opts_spec)
{
    bool rdma = !strcmp(transport, "rdma");
    if (!rdma && strcmp(transport, "tcp")) {
        ms_tool_usage_error(cmd, "--transport '%s': expected tcp, fd or rdma", transport);
        return ms_error(MS_ERR_INVAL, "--transport '%s': expected tcp, fd or rdma", transport);
    }
    if (!rdma && rdma_opts_spec) {
        ms_tool_usage_error(cmd, "--rdma-opts applies to --transport rdma only");
        return ms_error(MS_ERR_INVAL, "--rdma-opts applies to --transport rdma only");
    }
#if MS_HAVE_RDMA
    if (rdma) {
        ms_rdma_options o;
        if (rdma_opts(rdma_opts_spec, 0, &o) < 0) {
            fprintf(stderr, "migstream %s: %s (see migstream %s --help)\n", cmd, ms_last_error(), cmd);
            return MS_ERR_INVAL;
        }
    }
#else
    if (rdma) {
        fprintf(stderr, "migstream %s: --transport rdma: %s\n", cmd, MS_TOOL_NO_RDMA_MSG);
        return ms_error(MS_ERR_UNSUPPORTED, "%s", MS_TOOL_NO_RDMA_MSG);
    }
#endif
    return MS_OK;
}

int ms_tool_connect_via(const char *transport, const char *rdma_opts_spec, const char *hostport, unsigned n,
                        uint64_t timeout_ms, ms_conn **conns)
{
    if (strcmp(transport, "rdma"))
        return ms_tool_connect(hostport, n, timeout_ms, conns);
#if MS_HAVE_RDMA
    ms_rdma_options o;
    int rc = rdma_opts(rdma_opts_spec, timeout_ms, &o);
    if (rc == MS_OK && (rc = ms_rdma_available()) < 0)
        ms_error_wrap(rc, "--transport rdma to %s", hostport);
    if (rc == MS_OK)
        rc = ms_rdma_connect_n(hostport, n, &o, conns);
    return rc;
#else
    (void)rdma_opts_spec, (void)hostport, (void)n, (void)timeout_ms, (void)conns;
    return ms_error(MS_ERR_UNSUPPORTED, "%s", MS_TOOL_NO_RDMA_MSG);
#endif
}

int ms_tool_listen_via(const char *transport, const char *rdma_opts_spec, const char *hostport, uint64_t timeout_ms,
                       ms_listener **l)
{
    if (strcmp(transport, "rdma"))
        return ms_tool_listen(hostport, timeout_ms, l);
#if MS_HAVE_RDMA
    ms_rdma_options o;
    int rc = rdma_opts(rdma_opts_spec, timeout_ms, &o);
    if (rc == MS_OK && (rc = ms_rdma_available()) < 0)
        ms_error_wrap(rc, "--transport rdma on %s", hostport);
    if (rc == MS_OK)
        rc = ms_rdma_listen_str(hostport, &o, l);
    return rc;
#else
    (void)rdma_opts_spec, (void)hostport, (void)timeout_ms, (void)l;
    return ms_error(MS_ERR_UNSUPPORTED, "%s", MS_TOOL_NO_RDMA_MSG);
#endif
}

/* ---- sample image ------------------------------------------------------- */

uint64_t ms_tool_rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void sample_text(uint8_t *p, uint64_t *rs)
{
    static const char *const words[] = {
        "the", "of", "and", "to", "in", "is", "for", "that", "with", "migration", "page", "memory",
        "return", "if", "else", "static", "struct", "error", "buffer", "length", "session", "INFO",
        "GET /index.html HTTP/1.1", "200", "user", "key", "value", "config", "2024-05-01",
    };
    size_t n = sizeof words / sizeof *words, i = 0;
    while (i < MS_PAGE_SIZE) {
        const char *w = words[ms_tool_rng(rs) % n];
        for (size_t k = 0; w[k] && i < MS_PAGE_SIZE; k++)
            p[i++] = (uint8_t)w[k];
        if (i < MS_PAGE_SIZE)
            p[i++] = (ms_tool_rng(rs) & 15) ? ' ' : '\n';
    }
}

static void sample_pointers(uint8_t *p, uint64_t pfn, uint64_t *rs)
{
    /* Heap-like: pointers into a few regions, small integers, padding. */
    for (size_t i = 0; i < MS_PAGE_SIZE; i += 8) {
        uint64_t r = ms_tool_rng(rs), v;
        switch (r & 3) {
        case 0: v = 0x00007f3a00000000ull + ((pfn << 12) & 0xfffffff) + (r >> 40 & 0xff8); break;
        case 1: v = 0x0000555500000000ull + (r >> 32 & 0xffff8); break;
        case 2: v = r >> 56; break;
        default: v = 0; break;
        }
        ms_put_le64(p + i, v);
    }
}

void ms_tool_sample_page(uint8_t *p, uint64_t pfn, uint32_t version, uint64_t seed)
{
    uint64_t kind_state = seed ^ (pfn * 0x9e3779b97f4a7c15ull);
    uint64_t kind = ms_tool_rng(&kind_state) % 100;
    uint64_t rs = seed ^ (pfn << 20) ^ 0x5bd1e995;
    memset(p, 0, MS_PAGE_SIZE);
    if (kind < 40) {
        /* zero (but a later version may have been written to) */
    } else if (kind < 60) {
        sample_text(p, &rs);
    } else if (kind < 80) {
        sample_pointers(p, pfn, &rs);
    } else if (kind < 90) {
        for (size_t i = 0; i < MS_PAGE_SIZE; i += 8)
            ms_put_le64(p + i, ms_tool_rng(&rs));
    } else {
        for (int k = 0; k < 8; k++)
            p[ms_tool_rng(&rs) % MS_PAGE_SIZE] = (uint8_t)ms_tool_rng(&rs);
    }
    /* Each later version rewrites a small run, as a running program would. */
    for (uint32_t v = 1; v <= version; v++) {
        uint64_t vs = seed ^ (pfn * 31 + v) * 0xff51afd7ed558ccdull;
        uint64_t r = ms_tool_rng(&vs);
        size_t off = r % (MS_PAGE_SIZE - 256), len = 16 + (r >> 32) % 240;
        for (size_t i = 0; i < len; i++)
            p[off + i] = (uint8_t)ms_tool_rng(&vs);
    }
}

/* ---- progress sink -------------------------------------------------------- */

const char *ms_tool_bytes(uint64_t b, char *buf, size_t n)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

static void sink_progress(ms_progress_sink *s, bool force)
{
    char b[32];
    double secs = (double)(ms_now_ns() - s->t0) / 1e9;
    uint64_t bytes = s->pages * MS_PAGE_SIZE + s->opaque_bytes;
    ms_progress_update(s->progress, force, "receiving: round %u, %llu pages, %s, %.0f MiB/s", s->round,
                       (unsigned long long)s->pages, ms_tool_bytes(bytes, b, sizeof b),
                       secs > 0 ? (double)bytes / secs / 1048576.0 : 0.0);
}

static int progress_pages(void *ctx, uint32_t round, uint32_t fragment, const uint64_t *pfns, const uint8_t *pages,
                          size_t count, size_t page_size)
{
    ms_progress_sink *s = ctx;
    if (!s->t0)
        s->t0 = ms_now_ns();
    s->pages += count;
    s->round = round;
    sink_progress(s, false);
    return s->inner->pages(s->inner_ctx, round, fragment, pfns, pages, count, page_size);
}

static int progress_opaque(void *ctx, const uint8_t *data, size_t len)
{
    ms_progress_sink *s = ctx;
    if (!s->t0)
        s->t0 = ms_now_ns();
    s->opaque_bytes += len;
    return s->inner->opaque(s->inner_ctx, data, len);
}

static int progress_round_end(void *ctx, uint32_t round)
{
    ms_progress_sink *s = ctx;
    sink_progress(s, true);
    return s->inner->round_end(s->inner_ctx, round);
}

static int progress_end(void *ctx)
{
    ms_progress_sink *s = ctx;
    return s->inner->end(s->inner_ctx);
}

const ms_sink_ops ms_progress_sink_ops = {
    .pages = progress_pages,
    .opaque = progress_opaque,
    .round_end = progress_round_end,
    .end = progress_end,
};

/* ---- shared by migrate and sim ------------------------------------------- */

int ms_tool_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts,
                   ms_tool_option_fn option, void *ctx, bool *help)
{
    int c, rc = MS_OK;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        if (c == 'h') {
            *help = true;
            break;
        }
        if (c == '?')
            rc = ms_error(MS_ERR_INVAL, "unknown or incomplete option '%s'", argv[optind - 1]);
        else
            rc = option(ctx, c, optarg);
    }
    return rc;
}

int ms_tool_number(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !(v >= lo && v <= hi))
        return ms_error(MS_ERR_INVAL, "%s: '%s' is not a number in %g..%g", opt, s, lo, hi);
    *out = v;
    return MS_OK;
}

int ms_tool_uint(const char *opt, const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    /* strtoul accepts "-1" as ULONG_MAX: only digits may start it */
    if (errno || *end || end == s || *s < '0' || *s > '9' || v < lo || v > hi)
        return ms_error(MS_ERR_INVAL, "%s: '%s' is not a whole number in %u..%u", opt, s, lo, hi);
    *out = (unsigned)v;
    return MS_OK;
}

int ms_tool_parse_policies(const char *text, const char **names, size_t *n)
{
    if (!strcmp(text, "all"))
        text = "precopy,fragmented,downtime";
    *n = 0;
    char *copy = strdup(text), *save = NULL;
    int rc = MS_OK;
    for (char *t = strtok_r(copy, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save)) {
        const ms_policy_ops *ops = ms_policy_by_name(t);
        if (!ops)
            rc = ms_error(MS_ERR_INVAL, "unknown policy '%s' (known: %s, all)", t, ms_policy_names());
        else if (*n == MS_TOOL_MAX_POLICIES)
            rc = ms_error(MS_ERR_INVAL, "more than %d policies", MS_TOOL_MAX_POLICIES);
        else
            names[(*n)++] = ops->name;
    }
    free(copy);
    if (!rc && !*n)
        rc = ms_error(MS_ERR_INVAL, "--policy needs at least one name");
    return rc;
}

int ms_tool_policy_option(int opt, const char *arg, ms_policy_config *pc)
{
    uint64_t u;
    switch (opt) {
    case MS_TOOL_OPT_DOWNTIME: return ms_tool_number("--downtime", arg, 0.1, 3.6e6, &pc->downtime_ms);
    case MS_TOOL_OPT_FRAGMENT_SIZE:
        if (ms_parse_size(arg, &u) || !u || u % (64 * MS_PAGE_SIZE) || u / MS_PAGE_SIZE > (1u << 24))
            return ms_error(MS_ERR_INVAL, "--fragment-size: '%s' is not a multiple of 256K up to 64G", arg);
        pc->fragment_pages = (uint32_t)(u / MS_PAGE_SIZE);
        return MS_OK;
    default: return ms_error(MS_ERR_INVAL, "option %d is not a scheduler option", opt);
    }
}

int ms_tool_parsed(const char *cmd, int rc, bool help, void (*usage)(FILE *f))
{
    if (help) {
        usage(stdout);
        return MS_EXIT_OK;
    }
    if (rc) {
        fprintf(stderr, "migstream %s: %s\n", cmd, ms_last_error());
        return MS_EXIT_USAGE;
    }
    return -1;
}

void ms_tool_reports_print(const ms_migration_report *reps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        putchar('\n');
        ms_report_print(&reps[i], stdout);
    }
}

void ms_tool_reports_json(const ms_migration_report *reps, size_t n)
{
    printf("{\"migrations\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            putchar(',');
        ms_report_json(&reps[i], stdout);
    }
    printf("]}\n");
}

int ms_tool_reports_finish(const ms_migration_report *reps, size_t n, const char *plot, const char *title_prefix,
                           const char *plot_title, bool json)
{
    const ms_migration_report *ptrs[MS_TOOL_MAX_POLICIES];
    char title[256];
    fflush(stdout);
    if (!plot)
        return MS_OK;
    if (n > MS_TOOL_MAX_POLICIES)
        n = MS_TOOL_MAX_POLICIES;
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &reps[i];
    snprintf(title, sizeof(title), "%s%s", title_prefix, plot_title ? plot_title : reps[0].source);
    int rc = ms_report_plot(ptrs, n, plot, title);
    if (!rc && !json)
        printf("plots: %s.png %s.svg\n", plot, plot);
    return rc;
}
