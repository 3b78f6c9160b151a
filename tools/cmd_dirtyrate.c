/* `migstream dirtyrate`: how fast a live process writes its memory, seen
 * the way the migration engine sees it (distinct pages per bitmap read).
 * QEMU's calc-dirty-rate answers the same question for a guest; here it
 * also says whether the workload has quiet phases (the fragmented policy
 * waits for them) and how its rate compares with a link, which is what
 * decides whether pre-copy can converge at all. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/toolutil.h"

typedef struct dr_args {
    ms_tool_proc proc;
    uint64_t interval_ms, duration_ms, window_ms;
    uint64_t link; /* bytes/s, 0: not given */
    bool json, series;
    const char *plot;
} dr_args;

typedef struct dr_result {
    char source[128];
    uint64_t npages;        /* tracked at the end */
    uint32_t page_size;
    size_t n;               /* intervals read */
    uint64_t *written;      /* distinct pages per interval */
    double *t;              /* end of each interval, s since the first read */
    size_t nwin;
    double win_mean, win_min, win_max; /* distinct pages/s per window */
    uint64_t touched;       /* distinct pages over the whole run */
    size_t quiet;           /* quiet intervals */
    double longest_quiet_s, longest_busy_s;
} dr_result;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: migstream dirtyrate [OPTIONS] (--pid PID | -- COMMAND [ARGS...])\n\n"
        "Measure how fast a running process writes its memory, as the migration\n"
        "engine sees it: the distinct pages written between bitmap reads\n"
        "(userfaultfd write-protect + PAGEMAP_SCAN; needs root and Linux >= 6.7).\n"
        "Reports the rate per window (like QEMU's calc-dirty-rate), the pages\n"
        "touched over the whole run, and the quiet intervals (at most 0.1%% of\n"
        "memory written: the phases the fragmented policy waits for).\n\n"
        "  --interval DURATION   time between bitmap reads (default 50ms)\n"
        "  --duration DURATION   how long to measure (default 5s)\n"
        "  --window DURATION     rate window, a multiple of the interval (default 1s)\n"
        "  --link RATE           also give the rate as a share of this link\n"
        "                        (\"1gbit\", \"125M\"): pre-copy converges only well below 1\n"
        MS_TOOL_PROC_HELP
        "  --series              also print every interval (time, pages)\n"
        "  --json                print the result as JSON\n"
        "  --plot PREFIX         write PREFIX.png and PREFIX.svg (gnuplot): pages per interval\n"
        "\nExit status: 0 measured, 1 failed (e.g. tracking not possible here), 2 bad usage.\n");
}

enum { OPT_INTERVAL = 1000, OPT_DURATION, OPT_WINDOW, OPT_LINK, OPT_SERIES, OPT_JSON, OPT_PLOT };

static const struct option long_opts[] = {
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"link", required_argument, NULL, OPT_LINK},
    MS_TOOL_PROC_LONGOPTS,
    {"series", no_argument, NULL, OPT_SERIES},
    {"json", no_argument, NULL, OPT_JSON},
    {"plot", required_argument, NULL, OPT_PLOT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse_duration(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *ms)
{
    if (ms_parse_duration_ms(v, ms) || *ms < lo || *ms > hi)
        return ms_error(MS_ERR_INVAL, "%s: '%s' is not a duration in %llums..%llus", opt, v,
                        (unsigned long long)lo, (unsigned long long)hi / 1000);
    return MS_OK;
}

static int parse_one(void *ctx, int c, const char *v)
{
    dr_args *a = ctx;
    switch (c) {
    case OPT_INTERVAL: return parse_duration("--interval", v, 1, 10000, &a->interval_ms);
    case OPT_DURATION: return parse_duration("--duration", v, 1, 3600000, &a->duration_ms);
    case OPT_WINDOW: return parse_duration("--window", v, 1, 3600000, &a->window_ms);
    case OPT_LINK:
        if (ms_parse_rate(v, &a->link) || !a->link)
            return ms_error(MS_ERR_INVAL, "--link: bad rate '%s'", v);
        return MS_OK;
    case OPT_SERIES: a->series = true; return MS_OK;
    case OPT_JSON: a->json = true; return MS_OK;
    case OPT_PLOT: a->plot = v; return MS_OK;
    default: return ms_tool_proc_option(&a->proc, c, v);
    }
}

static int parse_args(dr_args *a, int argc, char **argv, bool *help)
{
    memset(a, 0, sizeof(*a));
    ms_tool_proc_init(&a->proc);
    a->interval_ms = 50;
    a->duration_ms = 5000;
    a->window_ms = 1000;
    int rc = ms_tool_getopt(argc, argv, "+h", long_opts, parse_one, a, help);
    if (rc || *help)
        return rc;
    if (a->window_ms % a->interval_ms)
        return ms_error(MS_ERR_INVAL, "--window %llums is not a multiple of --interval %llums",
                        (unsigned long long)a->window_ms, (unsigned long long)a->interval_ms);
    if (a->duration_ms < a->interval_ms)
        return ms_error(MS_ERR_INVAL, "--duration %llums is shorter than one --interval (%llums)",
                        (unsigned long long)a->duration_ms, (unsigned long long)a->interval_ms);
    return ms_tool_proc_check(&a->proc, argv + optind);
}

static void sleep_until(uint64_t t_ns)
{
    struct timespec ts = {(time_t)(t_ns / 1000000000ull), (long)(t_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void or_into(uint64_t *dst, const uint64_t *src, size_t nw)
{
    for (size_t w = 0; w < nw; w++)
        dst[w] |= src[w];
}

/* Window rates and quiet spells from the per-interval counts. */
static void summarize(const dr_args *a, dr_result *r, const uint64_t *win_pages)
{
    double iv = (double)a->interval_ms / 1000, ws = (double)a->window_ms / 1000, sum = 0;
    r->win_min = INFINITY;
    for (size_t k = 0; k < r->nwin; k++) {
        double rate = (double)win_pages[k] / ws;
        sum += rate;
        r->win_min = rate < r->win_min ? rate : r->win_min;
        r->win_max = rate > r->win_max ? rate : r->win_max;
    }
    r->win_mean = r->nwin ? sum / (double)r->nwin : 0;
    if (!r->nwin)
        r->win_min = 0;
    double quiet_run = 0, busy_run = 0, limit = MS_QUIET_MEMORY_SHARE * (double)r->npages;
    for (size_t i = 0; i < r->n; i++) {
        bool quiet = (double)r->written[i] <= limit;
        r->quiet += quiet;
        quiet_run = quiet ? quiet_run + iv : 0;
        busy_run = quiet ? 0 : busy_run + iv;
        r->longest_quiet_s = quiet_run > r->longest_quiet_s ? quiet_run : r->longest_quiet_s;
        r->longest_busy_s = busy_run > r->longest_busy_s ? busy_run : r->longest_busy_s;
    }
}

static void progress(const dr_args *a, const dr_result *r)
{
    if (a->json || !ms_tty_progress())
        return;
    fprintf(stderr, "\r  %.1f / %.1f s: %llu pages in the last %llu ms   ", r->t[r->n - 1],
            (double)a->duration_ms / 1000, (unsigned long long)r->written[r->n - 1],
            (unsigned long long)a->interval_ms);
}

/* Read the bitmap every interval for the whole duration. */
static int measure(const dr_args *a, ms_page_source *src, dr_result *r)
{
    uint64_t cap = ms_source_max_pages(src);
    size_t nw = ms_bitmap_words(cap), nint = (size_t)(a->duration_ms / a->interval_ms);
    size_t per_win = (size_t)(a->window_ms / a->interval_ms);
    uint64_t *bm = calloc(nw, 8), *win = calloc(nw, 8), *all = calloc(nw, 8);
    uint64_t *win_pages = calloc(nint / per_win + 1, sizeof(*win_pages));
    r->written = calloc(nint, sizeof(*r->written));
    r->t = calloc(nint, sizeof(*r->t));
    int rc = MS_OK;
    if (!bm || !win || !all || !win_pages || !r->written || !r->t) {
        rc = ms_error(MS_ERR_NOMEM, "dirtyrate: no memory for bitmaps of %llu pages", (unsigned long long)cap);
        goto out;
    }
    /* Every page counts as written before the first read: that read only
     * starts the clock. */
    if ((rc = ms_source_start(src)) || (rc = ms_source_dirty(src, bm)))
        goto out;
    uint64_t t0 = ms_now_ns(), step = a->interval_ms * 1000000ull;
    for (size_t i = 0; i < nint; i++) {
        sleep_until(t0 + (i + 1) * step);
        memset(bm, 0, nw * 8);
        if ((rc = ms_source_dirty(src, bm)))
            goto out;
        r->written[i] = ms_bitmap_count(bm, cap);
        r->t[i] = (double)(ms_now_ns() - t0) / 1e9;
        r->n = i + 1;
        or_into(win, bm, nw);
        or_into(all, bm, nw);
        if ((i + 1) % per_win == 0) {
            win_pages[r->nwin++] = ms_bitmap_count(win, cap);
            memset(win, 0, nw * 8);
        }
        progress(a, r);
    }
    if (!a->json && ms_tty_progress())
        fputc('\n', stderr);
    r->npages = src->npages;
    r->page_size = src->page_size;
    r->touched = ms_bitmap_count(all, cap);
    snprintf(r->source, sizeof(r->source), "%s", src->desc);
    summarize(a, r, win_pages);
out:
    if (rc)
        rc = ms_error_wrap(rc, "%s: dirty tracking", src->desc);
    free(bm);
    free(win);
    free(all);
    free(win_pages);
    return rc;
}

static double mib(double pages, uint32_t ps) { return pages * ps / 1048576.0; }

static void print_text(const dr_args *a, const dr_result *r)
{
    printf("%s\n%llu pages tracked (%.0f MiB), read every %llu ms for %.1f s\n", r->source,
           (unsigned long long)r->npages, mib((double)r->npages, r->page_size),
           (unsigned long long)a->interval_ms, r->n ? r->t[r->n - 1] : 0);
    printf("written, per %.3g s window: mean %.0f pages/s (%.1f MiB/s), min %.0f, max %.0f (%zu windows)\n",
           (double)a->window_ms / 1000, r->win_mean, mib(r->win_mean, r->page_size), r->win_min,
           r->win_max, r->nwin);
    if (a->link)
        printf("against the %.1f MB/s link: %.2f (mean), %.2f (max)\n", (double)a->link / 1e6,
               r->win_mean * r->page_size / (double)a->link, r->win_max * r->page_size / (double)a->link);
    printf("touched over the run: %llu pages (%.1f%% of memory)\n", (unsigned long long)r->touched,
           r->npages ? 100.0 * (double)r->touched / (double)r->npages : 0);
    printf("quiet intervals (<= %.1f%% of memory written): %zu of %zu; longest quiet spell %.2f s, "
           "longest busy spell %.2f s\n", MS_QUIET_MEMORY_SHARE * 100, r->quiet, r->n,
           r->longest_quiet_s, r->longest_busy_s);
    if (a->series)
        for (size_t i = 0; i < r->n; i++)
            printf("%.3f %llu\n", r->t[i], (unsigned long long)r->written[i]);
}

static void print_json(const dr_args *a, const dr_result *r)
{
    printf("{\"source\":");
    ms_json_str(stdout, r->source);
    printf(",\"pages\":%llu,\"page_size\":%u,\"interval_s\":%.3f,\"duration_s\":%.3f,\"window_s\":%.3f,"
           "\"windows\":{\"n\":%zu,\"mean_pages_per_s\":%.1f,\"min_pages_per_s\":%.1f,\"max_pages_per_s\":%.1f,"
           "\"mean_bytes_per_s\":%.0f}",
           (unsigned long long)r->npages, r->page_size, (double)a->interval_ms / 1000,
           r->n ? r->t[r->n - 1] : 0, (double)a->window_ms / 1000, r->nwin, r->win_mean, r->win_min,
           r->win_max, r->win_mean * r->page_size);
    if (a->link)
        printf(",\"link_bytes_per_s\":%llu,\"dirty_to_link\":%.4f,\"max_dirty_to_link\":%.4f",
               (unsigned long long)a->link, r->win_mean * r->page_size / (double)a->link,
               r->win_max * r->page_size / (double)a->link);
    printf(",\"touched_pages\":%llu,\"quiet\":{\"share_of_memory\":%g,\"intervals\":%zu,\"of\":%zu,"
           "\"longest_s\":%.3f,\"longest_busy_s\":%.3f}",
           (unsigned long long)r->touched, MS_QUIET_MEMORY_SHARE, r->quiet, r->n, r->longest_quiet_s,
           r->longest_busy_s);
    if (a->series) {
        printf(",\"series\":[");
        for (size_t i = 0; i < r->n; i++)
            printf("%s[%.3f,%llu]", i ? "," : "", r->t[i], (unsigned long long)r->written[i]);
        printf("]");
    }
    printf("}\n");
}

static int plot(const dr_args *a, const dr_result *r)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s.dat", a->plot);
    FILE *d = fopen(path, "w");
    if (!d)
        return ms_error(MS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    for (size_t i = 0; i < r->n; i++)
        fprintf(d, "%.3f %llu\n", r->t[i], (unsigned long long)r->written[i]);
    fclose(d);
    snprintf(path, sizeof(path), "%s.gp", a->plot);
    FILE *g = fopen(path, "w");
    if (!g)
        return ms_error(MS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    for (int t = 0; t < 2; t++)
        fprintf(g,
                "%s\nset output '%s.%s'\nset title \"%s; %.0f MiB tracked at the end\" noenhanced\n"
                "set xlabel 'seconds'\n"
                "set ylabel 'pages written per %llu ms'\nset grid\nset key off\nset yrange [0:*]\n"
                "plot '%s.dat' using 1:2 with steps lw 2\nunset output\n",
                t ? "set terminal svg size 900,400 dynamic font 'sans,11'"
                  : "set terminal pngcairo size 900,400 font 'sans,10'",
                a->plot, t ? "svg" : "png", r->source, mib((double)r->npages, r->page_size),
                (unsigned long long)a->interval_ms, a->plot);
    fclose(g);
    return ms_gnuplot_run(path, a->plot);
}

int cmd_dirtyrate(int argc, char **argv)
{
    dr_args a;
    bool help = false;
    int rc = parse_args(&a, argc, argv, &help);
    int parsed = ms_tool_parsed("dirtyrate", rc, help, usage);
    if (parsed >= 0) {
        ms_tool_proc_cleanup(&a.proc);
        return parsed;
    }
    dr_result r = {0};
    ms_page_source *src = NULL;
    rc = ms_tool_proc_open(&a.proc, &src);
    if (!rc)
        rc = measure(&a, src, &r);
    ms_source_destroy(src);
    ms_tool_proc_cleanup(&a.proc);
    if (!rc) {
        if (a.json)
            print_json(&a, &r);
        else
            print_text(&a, &r);
        if (a.plot)
            rc = plot(&a, &r);
    }
    if (rc == MS_ERR_UNSUPPORTED)
        fprintf(stderr, "migstream dirtyrate: cannot track process memory here: %s\n", ms_last_error());
    else if (rc)
        fprintf(stderr, "migstream dirtyrate: %s\n", ms_last_error());
    free(r.written);
    free(r.t);
    return ms_exit_code(rc);
}
