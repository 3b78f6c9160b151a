/* `migstream migrate`: live-migrate the memory of a running process (or of
 * a command started for it) with a chosen policy, verify the destination,
 * report. Several policies (--policy precopy,fragmented or all) run one
 * after another on the same workload (a fresh instance of a command each
 * time) and are compared. `migstream demo` is this command with fixed
 * arguments. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fragsched/fragsched.h"
#include "tools/toolutil.h"

typedef struct migrate_args {
    ms_engine_config cfg;
    const char *policies[MS_TOOL_MAX_POLICIES];
    size_t npolicies;
    ms_tool_proc proc;
    bool json;
    const char *plot;
    const char *plot_title;
    bool stop_after;
    bool quiet;
} migrate_args;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: migstream migrate [OPTIONS] (--pid PID | -- COMMAND [ARGS...])\n\n"
        "Live-migrate the memory of a running process, or of COMMAND started under\n"
        "dirty tracking (userfaultfd write-protect + PAGEMAP_SCAN; needs root and\n"
        "Linux >= 6.7), then check the destination page for page.\n\n"
        "  --policy P[,P...]     precopy (Xen 4.17 default), fragmented (default),\n"
        "                        downtime (QEMU-like), or all; several run one after\n"
        "                        another and are compared\n"
        "  --to HOST:PORT|local  destination: `migstream recv` there, or a receiver\n"
        "                        in this process on loopback (default local; only\n"
        "                        local can verify page for page)\n"
        "  --local-listen ADDR   address of the local receiver (default 127.0.0.1)\n"
        "  --receiver-netns NS   put the local receiver's socket in network namespace\n"
        "                        NS, so pages cross a real link (scripts/netns-tbf.sh)\n"
        "  --chain CHAIN         codec chain (default zero,delta,lz4)\n"
        "  --channels N          parallel TCP connections (default 1)\n"
        "  --workers N           encode/decode threads per side (default: cores)\n"
        "  --max-bandwidth RATE  cap on the wire, bytes/s (\"125M\", \"1gbit\")\n"
        MS_TOOL_POLICY_HELP
        MS_TOOL_PROC_HELP
        "  --key FILE            pre-shared key: seal every frame\n"
        "  --after resume|stop   --pid: let the process run on (default) or leave it\n"
        "                        stopped as a migrated original would be\n"
        "  --record-trace FILE   write the dirty trace for `migstream sim --trace`\n"
        "  --json                print the reports as JSON ({\"migrations\":[...]})\n"
        "  --plot PREFIX         write PREFIX.png and PREFIX.svg (gnuplot)\n"
        "  --quiet               no per-round progress lines\n");
}

enum {
    OPT_POLICY = 1000, OPT_TO, OPT_CHAIN, OPT_CHANNELS, OPT_WORKERS, OPT_BW, OPT_ROUNDS,
    OPT_KEY, OPT_AFTER, OPT_TRACE, OPT_JSON, OPT_PLOT, OPT_QUIET, OPT_TITLE, OPT_LLISTEN,
    OPT_RXNS,
};

static const struct option long_opts[] = {
    {"policy", required_argument, NULL, OPT_POLICY},
    {"to", required_argument, NULL, OPT_TO},
    {"chain", required_argument, NULL, OPT_CHAIN},
    {"channels", required_argument, NULL, OPT_CHANNELS},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"max-bandwidth", required_argument, NULL, OPT_BW},
    MS_TOOL_POLICY_LONGOPTS,
    MS_TOOL_PROC_LONGOPTS,
    {"max-rounds", required_argument, NULL, OPT_ROUNDS},
    {"key", required_argument, NULL, OPT_KEY},
    {"local-listen", required_argument, NULL, OPT_LLISTEN},
    {"receiver-netns", required_argument, NULL, OPT_RXNS},
    {"after", required_argument, NULL, OPT_AFTER},
    {"record-trace", required_argument, NULL, OPT_TRACE},
    {"json", no_argument, NULL, OPT_JSON},
    {"plot", required_argument, NULL, OPT_PLOT},
    {"plot-title", required_argument, NULL, OPT_TITLE},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static uint8_t key_buf[MS_KEY_SIZE];

static int parse_one(void *ctx, int c, const char *v)
{
    migrate_args *a = ctx;
    int rc;
    switch (c) {
    case OPT_POLICY: return ms_tool_parse_policies(v, a->policies, &a->npolicies);
    case MS_TOOL_OPT_PID:
    case MS_TOOL_OPT_CHILDREN:
    case MS_TOOL_OPT_WARMUP:
    case MS_TOOL_OPT_READY:
    case MS_TOOL_OPT_CMDOUT:
    case MS_TOOL_OPT_MAXMEM: return ms_tool_proc_option(&a->proc, c, v);
    case OPT_TO: a->cfg.to = v; return MS_OK;
    case OPT_CHAIN: return ms_chain_parse(v, &a->cfg.session.chain);
    case OPT_CHANNELS: return ms_tool_uint("--channels", v, 1, MS_HELLO_MAX_CHANNELS, &a->cfg.channels);
    case OPT_WORKERS: return ms_tool_uint("--workers", v, 1, 256, &a->cfg.session.workers);
    case OPT_BW:
        if (ms_parse_rate(v, &a->cfg.session.max_bandwidth))
            return ms_error(MS_ERR_INVAL, "--max-bandwidth: bad rate '%s'", v);
        return MS_OK;
    case MS_TOOL_OPT_DOWNTIME:
    case MS_TOOL_OPT_FRAGMENT_SIZE: return ms_tool_policy_option(c, v, &a->cfg.policy_cfg);
    case OPT_ROUNDS: return ms_tool_uint("--max-rounds", v, 1, 100000, &a->cfg.policy_cfg.max_rounds);
    case OPT_KEY:
        if ((rc = ms_key_load(v, key_buf)))
            return rc;
        a->cfg.session.key = key_buf;
        return MS_OK;
    case OPT_LLISTEN: a->cfg.local_listen = v; return MS_OK;
    case OPT_RXNS: a->cfg.receiver_netns = v; return MS_OK;
    case OPT_AFTER:
        if (strcmp(v, "resume") && strcmp(v, "stop"))
            return ms_error(MS_ERR_INVAL, "--after: '%s' is not resume or stop", v);
        a->stop_after = !strcmp(v, "stop");
        return MS_OK;
    case OPT_TRACE: a->cfg.record_trace = v; return MS_OK;
    case OPT_JSON: a->json = true; return MS_OK;
    case OPT_PLOT: a->plot = v; return MS_OK;
    case OPT_TITLE: a->plot_title = v; return MS_OK;
    case OPT_QUIET: a->quiet = true; return MS_OK;
    default: return ms_error(MS_ERR_INVAL, "unknown option (see migstream migrate --help)");
    }
}

static int parse_args(migrate_args *a, int argc, char **argv, bool *help)
{
    ms_engine_config_default(&a->cfg);
    a->policies[0] = "fragmented";
    a->npolicies = 1;
    ms_tool_proc_init(&a->proc);
    int rc = ms_tool_getopt(argc, argv, "+h", long_opts, parse_one, a, help);
    if (rc || *help)
        return rc;
    if (a->cfg.record_trace && a->npolicies > 1)
        return ms_error(MS_ERR_INVAL, "--record-trace takes a single --policy");
    if ((rc = ms_tool_proc_check(&a->proc, argv + optind)))
        return rc;
    a->cfg.progress = !a->quiet && !a->json;
    a->cfg.after = a->stop_after ? MS_AFTER_STAY_PAUSED : MS_AFTER_RESUME;
    return MS_OK;
}

static int migrate_once(const migrate_args *a, const char *policy, ms_migration_report *rep)
{
    ms_page_source *src = NULL;
    int rc = ms_tool_proc_open(&a->proc, &src);
    if (rc)
        return rc;
    ms_engine_config cfg = a->cfg;
    cfg.policy = policy;
    if (cfg.progress)
        fprintf(stderr, "migrating %s with policy %s\n", src->desc, policy);
    rc = ms_migrate(src, &cfg, rep);
    int pid = ms_process_source_pid(src);
    ms_source_destroy(src);
    if (!rc && a->proc.pid && a->stop_after && pid > 0)
        kill(pid, SIGSTOP); /* destroy resumes an attached process; the original stays stopped */
    return rc;
}

static int output(const migrate_args *a, ms_migration_report *reps, size_t n)
{
    if (a->json) {
        ms_tool_reports_json(reps, n);
    } else {
        ms_tool_reports_print(reps, n);
        if (n > 1)
            ms_report_compare(reps, n, stdout);
    }
    return ms_tool_reports_finish(reps, n, a->plot, "", a->plot_title, a->json);
}

int cmd_migrate(int argc, char **argv)
{
    migrate_args a;
    memset(&a, 0, sizeof(a));
    bool help = false;
    int rc = parse_args(&a, argc, argv, &help);
    int parsed = ms_tool_parsed("migrate", rc, help, usage);
    if (parsed >= 0)
        return parsed;
    ms_migration_report reps[MS_TOOL_MAX_POLICIES];
    memset(reps, 0, sizeof(reps));
    size_t done = 0;
    for (; done < a.npolicies; done++) {
        rc = migrate_once(&a, a.policies[done], &reps[done]);
        if (rc && rc != MS_ERR_VERIFY)
            break;
        if (rc == MS_ERR_VERIFY)
            fprintf(stderr, "migstream migrate: %s\n", ms_last_error());
    }
    int status = rc;
    if (rc && rc != MS_ERR_VERIFY) {
        ms_errbuf eb = {0};
        ms_errbuf_capture(&eb);
        if (rc == MS_ERR_UNSUPPORTED)
            fprintf(stderr, "migstream migrate: cannot track process memory here: %s\n", eb.msg);
        else
            fprintf(stderr, "migstream migrate (%s): %s\n", a.policies[done], eb.msg);
    }
    if (done) {
        int orc = output(&a, reps, done);
        if (orc && !status) {
            fprintf(stderr, "migstream migrate: %s\n", ms_last_error());
            status = orc;
        }
    }
    ms_tool_proc_cleanup(&a.proc);
    for (size_t i = 0; i < a.npolicies; i++) {
        if (reps[i].verify_done && !reps[i].verified && !status)
            status = MS_ERR_VERIFY;
        ms_report_free(&reps[i]);
    }
    return ms_exit_code(status);
}
