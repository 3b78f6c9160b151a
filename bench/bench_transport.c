/* bench_transport: migstream's TCP transport (ms_conn sendv/recv) against a
 * plain TCP sender/receiver moving the same bytes over loopback, 1..N
 * connections, in the same run. Each configuration is repeated and the
 * median and the best run reported, plain and ms_conn runs interleaved so
 * machine noise hits both alike (on a shared machine the best run is the
 * least disturbed one).
 *
 *   bench_transport [--bytes SIZE] [--conns N] [--reps R] [--only plain|conn] [--json] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_common.h"
#include "common/common.h"

#define MAX_REPS 15

typedef struct row {
    int conns;
    double plain, conn;          /* median GB/s */
    double plain_best, conn_best; /* best run: least disturbed by other load */
    double plain_cpu, conn_cpu;  /* median CPU seconds per GB moved */
} row;

static bool run_plain = true, run_conn = true;

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_transport [--bytes SIZE] [--conns N] [--reps R] [--json]\n"
               "  --bytes SIZE  bytes per run (default 1G; suffixes K M G, KiB MiB GiB)\n"
               "  --conns N     measure 1..N parallel connections (default 4)\n"
               "  --reps R      runs per configuration, median reported (default 5)\n"
               "  --only WHICH  run only the plain baseline or only ms_conn (for profiling)\n"
               "  --json        machine-readable output\n");
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

static int measure(size_t bytes, int conns, int reps, row *out)
{
    double p[MAX_REPS], c[MAX_REPS], pc[MAX_REPS], cc[MAX_REPS];
    double gb = (double)bytes / 1e9;
    for (int r = 0; r < reps; r++) {
        p[r] = run_plain ? ms_bench_plain_tcp_gbps_n(bytes, conns) : 0;
        pc[r] = ms_bench_last_cpu_s() / gb;
        c[r] = run_conn ? ms_bench_conn_tcp_gbps(bytes, conns) : 0;
        cc[r] = ms_bench_last_cpu_s() / gb;
        if (p[r] < 0 || c[r] < 0) {
            fprintf(stderr, "bench_transport: %s\n", ms_last_error());
            return 1;
        }
    }
    *out = (row){.conns = conns, .plain = ms_bench_median(p, reps), .conn = ms_bench_median(c, reps),
                 .plain_cpu = ms_bench_median(pc, reps), .conn_cpu = ms_bench_median(cc, reps)};
    /* ms_bench_median sorted the arrays: the best run is the last. */
    out->plain_best = p[reps - 1];
    out->conn_best = c[reps - 1];
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"bytes", required_argument, NULL, 'b'}, {"conns", required_argument, NULL, 'c'},
        {"reps", required_argument, NULL, 'r'},  {"json", no_argument, NULL, 'j'},
        {"only", required_argument, NULL, 'o'},  {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t bytes = 1ull << 30;
    int max_conns = 4, reps = 5;
    bool json = false;
    for (int o; (o = getopt_long(argc, argv, "b:c:r:o:jh", opts, NULL)) != -1;) {
        switch (o) {
        case 'b':
            if (ms_parse_size(optarg, &bytes) < 0 || bytes < (1u << 20)) {
                fprintf(stderr, "bench_transport: --bytes '%s': need a size of at least 1M\n", optarg);
                return 2;
            }
            break;
        case 'c':
            max_conns = atoi(optarg);
            if (max_conns < 1 || max_conns > 16) {
                fprintf(stderr, "bench_transport: --conns '%s': need 1..16\n", optarg);
                return 2;
            }
            break;
        case 'r':
            reps = atoi(optarg);
            if (reps < 1 || reps > MAX_REPS) {
                fprintf(stderr, "bench_transport: --reps '%s': need 1..%d\n", optarg, MAX_REPS);
                return 2;
            }
            break;
        case 'o':
            run_plain = strcmp(optarg, "plain") == 0;
            run_conn = strcmp(optarg, "conn") == 0;
            if (!run_plain && !run_conn) {
                fprintf(stderr, "bench_transport: --only '%s': plain or conn\n", optarg);
                return 2;
            }
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }

    row rows[16];
    for (int n = 1; n <= max_conns; n++)
        if (measure((size_t)bytes, n, reps, &rows[n - 1]))
            return 1;

    if (json) {
        printf("{\"bench\":\"transport\",\"bytes\":%llu,\"reps\":%d,\"unit\":\"GB/s\",\"results\":[",
               (unsigned long long)bytes, reps);
        for (int i = 0; i < max_conns; i++)
            printf("%s{\"conns\":%d,\"plain_tcp_gbps\":%.3f,\"ms_conn_gbps\":%.3f,\"ratio\":%.3f,"
                   "\"plain_best_gbps\":%.3f,\"ms_conn_best_gbps\":%.3f,\"best_ratio\":%.3f,"
                   "\"plain_cpu_s_per_gb\":%.3f,\"ms_conn_cpu_s_per_gb\":%.3f}",
                   i ? "," : "", rows[i].conns, rows[i].plain, rows[i].conn,
                   ratio(rows[i].conn, rows[i].plain), rows[i].plain_best, rows[i].conn_best,
                   ratio(rows[i].conn_best, rows[i].plain_best), rows[i].plain_cpu, rows[i].conn_cpu);
        printf("]}\n");
        return 0;
    }
    printf("loopback TCP, %.2f GB per run, median of %d runs (GB/s = 1e9 bytes/s)\n",
           (double)bytes / 1e9, reps);
    printf("%5s | %10s %10s %6s | %10s %10s %6s | %8s %8s\n", "", "median", "", "", "best", "",
           "", "CPU s/GB", "");
    printf("%5s | %10s %10s %6s | %10s %10s %6s | %8s %8s\n", "conns", "plain", "ms_conn",
           "ratio", "plain", "ms_conn", "ratio", "plain", "ms_conn");
    for (int i = 0; i < max_conns; i++)
        printf("%5d | %10.3f %10.3f %6.3f | %10.3f %10.3f %6.3f | %8.3f %8.3f\n", rows[i].conns,
               rows[i].plain, rows[i].conn, ratio(rows[i].conn, rows[i].plain), rows[i].plain_best,
               rows[i].conn_best, ratio(rows[i].conn_best, rows[i].plain_best), rows[i].plain_cpu,
               rows[i].conn_cpu);
    return 0;
}
