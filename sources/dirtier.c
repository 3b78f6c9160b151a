/* migstream-dirtier: a real process that dirties memory, for demos and
 * tests of live process migration. It fills a region with content that
 * looks like real memory, then writes continuously: a hot set of pages (by
 * default 10%) gets most of the writes (90%), at a set rate or flat out. */
#include "sources/sources_int.h"

#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

typedef struct opts {
    uint64_t size;
    double rate, hot, share, duration, counter;
    uint64_t seed;
    bool thp, quiet;
} opts;

/* Built without the project's libraries (see meson.build), so its own
 * clock and size parser. */
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* "512M", "1G", "1GiB", "65536" (bytes). */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s)
        return -1;
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    }
    if (shift && (!strcmp(end, "iB") || !strcmp(end, "B")))
        end += strlen(end);
    if (*end || v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: migstream-dirtier [options]\n"
            "Allocate memory, fill it with realistic content (zero pages, text,\n"
            "pointer-rich records, random bytes) and keep writing to it.\n\n"
            "  -s, --size SIZE        memory to dirty (default 512M)\n"
            "  -r, --rate N           page writes per second, 0 = as fast as possible (default 0)\n"
            "      --hot FRACTION     share of the pages in the hot set (default 0.1)\n"
            "      --hot-share F      share of the writes that go to the hot set (default 0.9)\n"
            "      --seed N           seed of content and write pattern (default 1)\n"
            "  -d, --duration SEC     exit after SEC seconds (default: until SIGTERM/SIGINT)\n"
            "  -c, --counter SEC      print the write counter every SEC seconds (default 1, 0 = never)\n"
            "      --thp              allow transparent huge pages (default: MADV_NOHUGEPAGE, so\n"
            "                         dirty tracking sees 4 KiB pages)\n"
            "  -q, --quiet            print only the ready line\n"
            "  -h, --help             this text\n\n"
            "Once filled it prints \"ready pid=PID addr=0xADDR size=BYTES\" and flushes stdout.\n");
}

static int parse_frac(const char *s, double *out)
{
    char *end;
    double d = strtod(s, &end);
    if (end == s || *end || !(d >= 0 && d <= 1))
        return -1;
    *out = d;
    return 0;
}

static int parse_opts(int argc, char **argv, opts *o)
{
    static const struct option longopts[] = {
        {"size", required_argument, 0, 's'}, {"rate", required_argument, 0, 'r'},
        {"hot", required_argument, 0, 'H'},  {"hot-share", required_argument, 0, 'S'},
        {"seed", required_argument, 0, 'x'}, {"duration", required_argument, 0, 'd'},
        {"counter", required_argument, 0, 'c'}, {"thp", no_argument, 0, 'T'},
        {"quiet", no_argument, 0, 'q'},      {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *o = (opts){.size = 512ull << 20, .hot = 0.1, .share = 0.9, .counter = 1, .seed = 1};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "s:r:d:c:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (parse_size(optarg, &o->size) < 0 || o->size < MS_PAGE_SIZE)
                return fprintf(stderr, "migstream-dirtier: bad size '%s'\n", optarg), -1;
            break;
        case 'r':
        case 'd':
        case 'c': {
            double d = strtod(optarg, &end);
            if (end == optarg || *end || !(d >= 0) || !isfinite(d))
                return fprintf(stderr, "migstream-dirtier: bad number '%s'\n", optarg), -1;
            *(c == 'r' ? &o->rate : c == 'd' ? &o->duration : &o->counter) = d;
            break;
        }
        case 'H':
        case 'S':
            if (parse_frac(optarg, c == 'H' ? &o->hot : &o->share) < 0)
                return fprintf(stderr, "migstream-dirtier: '%s' is not a fraction in [0, 1]\n", optarg), -1;
            break;
        case 'x':
            o->seed = strtoull(optarg, &end, 0);
            if (*end || end == optarg)
                return fprintf(stderr, "migstream-dirtier: bad seed '%s'\n", optarg), -1;
            break;
        case 'T': o->thp = true; break;
        case 'q': o->quiet = true; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc)
        return fprintf(stderr, "migstream-dirtier: unexpected argument '%s'\n", argv[optind]), -1;
    return 0;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    opts o;
    if (parse_opts(argc, argv, &o) < 0)
        return 2;
    uint64_t npages = o.size / MS_PAGE_SIZE;
    uint8_t *mem = mmap(NULL, npages * MS_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("migstream-dirtier: mmap");
        return 1;
    }
    if (!o.thp)
        madvise(mem, npages * MS_PAGE_SIZE, MADV_NOHUGEPAGE);
    for (uint64_t p = 0; p < npages; p++)
        ms_src_content(o.seed, p, 0, mem + p * MS_PAGE_SIZE, MS_PAGE_SIZE);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("ready pid=%d addr=%p size=%llu\n", (int)getpid(), (void *)mem,
           (unsigned long long)(npages * MS_PAGE_SIZE));
    fflush(stdout);

    uint64_t hot_n = (uint64_t)ceil(o.hot * (double)npages);
    if (hot_n < 1)
        hot_n = 1;
    uint64_t rng = ms_src_mix64(o.seed ^ 0x64697274ull);
    uint64_t hot_start = ms_src_below(&rng, npages - hot_n + 1);
    uint64_t t0 = now_ns(), next_report = t0 + (uint64_t)(o.counter * 1e9);
    uint64_t writes = 0;
    /* Small batches at low rates keep the pace smooth. */
    int batch = o.rate > 0 && o.rate < 25600 ? (int)(o.rate / 100) + 1 : 256;
    while (!g_stop) {
        for (int i = 0; i < batch; i++) {
            uint64_t page = ms_src_unit(&rng) < o.share ? hot_start + ms_src_below(&rng, hot_n)
                                                       : ms_src_below(&rng, npages);
            uint64_t *w = (uint64_t *)(mem + page * MS_PAGE_SIZE) + ms_src_below(&rng, MS_PAGE_SIZE / 8);
            *w = ++writes;
        }
        uint64_t now = now_ns();
        if (o.duration > 0 && (double)(now - t0) >= o.duration * 1e9)
            break;
        if (o.counter > 0 && !o.quiet && now >= next_report) {
            double el = (double)(now - t0) / 1e9;
            printf("writes=%llu elapsed=%.1f rate=%.0f\n", (unsigned long long)writes, el, (double)writes / el);
            fflush(stdout);
            next_report += (uint64_t)(o.counter * 1e9);
        }
        if (o.rate > 0) {
            double ahead = (double)writes / o.rate - (double)(now - t0) / 1e9;
            if (ahead > 0)
                sleep_ns((uint64_t)(ahead * 1e9));
        }
    }
    if (!o.quiet)
        printf("done writes=%llu\n", (unsigned long long)writes);
    return 0;
}
