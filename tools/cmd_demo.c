/* `migstream demo`: the main job. Starts the built-in memory-dirtying
 * workload (migstream-dirtier: 512 MiB, a hot tenth of it taking 90% of
 * the writes), a receiver on loopback, migrates the workload live with the
 * fragmented policy and zero,delta,lz4, verifies the destination page for
 * page and prints the report. It is `migstream migrate` with fixed
 * arguments; --compare runs Xen's precopy on the same workload first. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "tools/tools.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: migstream demo [--quick] [--compare] [OPTIONS]\n\n"
        "Start migstream-dirtier (512 MiB, 10%% hot set taking 90%% of the writes),\n"
        "migrate it live to a receiver on loopback TCP with the fragmented policy and\n"
        "zero,delta,lz4, verify the destination page for page, print the report.\n"
        "Needs root and Linux >= 6.7 (userfaultfd write-protect + PAGEMAP_SCAN).\n\n"
        "  --quick            a CI-sized run: 64 MiB\n"
        "  --compare          run precopy (Xen 4.17's policy) and fragmented on the\n"
        "                     same workload and compare\n"
        "  --size SIZE        workload memory (default 512M, --quick 64M)\n"
        "  --rate N           workload page writes/s (default 100000, 0 = flat out)\n"
        "  --policy P[,P...]  instead of fragmented (see migstream migrate)\n"
        "  --chain CHAIN      instead of zero,delta,lz4\n"
        "  --channels N, --downtime MS, --max-bandwidth RATE, --json, --plot PREFIX,\n"
        "  --record-trace FILE, --quiet   as for migstream migrate\n");
}

/* The dirtier is built and installed next to migstream; in a build tree it
 * lives in ../sources/. */
static int find_dirtier(char *out, size_t n)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            int k = snprintf(out, n, "%s/migstream-dirtier", exe);
            if (k > 0 && (size_t)k < n && access(out, X_OK) == 0)
                return MS_OK;
            k = snprintf(out, n, "%s/../sources/migstream-dirtier", exe);
            if (k > 0 && (size_t)k < n && access(out, X_OK) == 0)
                return MS_OK;
        }
    }
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/local/bin:/usr/bin:/bin"), *save = NULL;
    int rc = ms_error(MS_ERR_UNSUPPORTED, "migstream-dirtier not found next to migstream, in "
                      "../sources/ or in PATH (build or install it with migstream)");
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        int k = snprintf(out, n, "%s/migstream-dirtier", d);
        if (k > 0 && (size_t)k < n && access(out, X_OK) == 0) {
            rc = MS_OK;
            break;
        }
    }
    free(copy);
    return rc;
}

enum { D_QUICK = 1000, D_COMPARE, D_SIZE, D_RATE, D_PASS, D_PASSFLAG };

static const struct option opts[] = {
    {"quick", no_argument, NULL, D_QUICK},
    {"compare", no_argument, NULL, D_COMPARE},
    {"size", required_argument, NULL, D_SIZE},
    {"rate", required_argument, NULL, D_RATE},
    {"policy", required_argument, NULL, D_PASS},
    {"chain", required_argument, NULL, D_PASS},
    {"channels", required_argument, NULL, D_PASS},
    {"downtime", required_argument, NULL, D_PASS},
    {"max-bandwidth", required_argument, NULL, D_PASS},
    {"plot", required_argument, NULL, D_PASS},
    {"record-trace", required_argument, NULL, D_PASS},
    {"workers", required_argument, NULL, D_PASS},
    {"fragment-size", required_argument, NULL, D_PASS},
    {"local-listen", required_argument, NULL, D_PASS},
    {"receiver-netns", required_argument, NULL, D_PASS},
    {"json", no_argument, NULL, D_PASSFLAG},
    {"quiet", no_argument, NULL, D_PASSFLAG},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int cmd_demo(int argc, char **argv)
{
    enum { MAXARGS = 64 };
    char *args[MAXARGS];
    int na = 0;
    const char *size = NULL, *rate = "100000", *policy = "fragmented";
    bool quick = false, compare = false;
    char *pass[32];
    char names[32][32];
    int npass = 0, c, idx = 0;
    bool json = false;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        switch (c) {
        case 'h': usage(stdout); return MS_EXIT_OK;
        case D_QUICK: quick = true; break;
        case D_COMPARE: compare = true; break;
        case D_SIZE: size = optarg; break;
        case D_RATE: rate = optarg; break;
        case D_PASS:
            if (!strcmp(opts[idx].name, "policy")) {
                policy = optarg;
                break;
            }
            if (npass + 2 > 30)
                goto usage_error;
            snprintf(names[npass], sizeof(names[npass]), "--%s", opts[idx].name);
            pass[npass] = names[npass];
            npass++;
            pass[npass++] = optarg;
            break;
        case D_PASSFLAG:
            if (npass + 1 > 30)
                goto usage_error;
            snprintf(names[npass], sizeof(names[npass]), "--%s", opts[idx].name);
            pass[npass] = names[npass];
            npass++;
            json = json || !strcmp(opts[idx].name, "json");
            break;
        default:
            goto usage_error;
        }
    }
    if (optind < argc)
        goto usage_error;
    char dirtier[PATH_MAX];
    if (find_dirtier(dirtier, sizeof(dirtier))) {
        fprintf(stderr, "migstream demo: %s\n", ms_last_error());
        return MS_EXIT_FAIL;
    }
    if (!size)
        size = quick ? "64M" : "512M";
    args[na++] = "migrate";
    args[na++] = "--policy";
    args[na++] = (char *)(compare ? "precopy,fragmented" : policy);
    args[na++] = "--chain";
    args[na++] = "zero,delta,lz4";
    args[na++] = "--ready";
    args[na++] = "ready pid=";
    args[na++] = "--warmup";
    args[na++] = (char *)(quick ? "0.5" : "1");
    args[na++] = "--plot-title";
    args[na++] = "migstream demo: migstream-dirtier";
    for (int i = 0; i < npass; i++)
        args[na++] = pass[i]; /* later options win over the defaults above */
    args[na++] = "--";
    args[na++] = dirtier;
    args[na++] = "--size";
    args[na++] = (char *)size;
    args[na++] = "--rate";
    args[na++] = (char *)rate;
    args[na] = NULL;
    if (!json) {
        printf("migstream demo: %s --size %s --rate %s, policy %s, chain zero,delta,lz4, "
               "local receiver\n", dirtier, size, rate, compare ? "precopy then fragmented" : policy);
        fflush(stdout);
    }
    return cmd_migrate(na, args);
usage_error:
    fprintf(stderr, "migstream demo: unexpected or malformed argument (see migstream demo --help)\n");
    return MS_EXIT_USAGE;
}
