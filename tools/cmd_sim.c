/* `migstream sim`: the migration policies over a workload model or a
 * recorded dirty trace, through a link model, in virtual time. Each policy
 * gets a fresh copy of the same (seeded) workload. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fragsched/fragsched.h"
#include "tools/toolutil.h"

typedef struct sim_args {
    const char *model;
    const char *trace;
    bool trace_loop;
    uint64_t seed;
    bool seed_set;
    const char *policies[MS_TOOL_MAX_POLICIES];
    size_t npolicies;
    ms_policy_config pcfg;
    ms_link_model link;
    double max_s;
    bool json;
    const char *plot;
    const char *plot_title;
    bool rounds;
} sim_args;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: migstream sim (--model SPEC | --trace FILE) [OPTIONS]\n\n"
        "Run the migration policies in virtual time over a workload model or a\n"
        "recorded dirty trace (`migstream migrate --record-trace`), through a link\n"
        "model. Nothing is copied: a 64 GiB guest takes seconds.\n\n"
        "  --model SPEC          KIND[,size=SIZE][,rate=PAGES/S][,seed=N][,zipf=S]\n"
        "                        [,hot=FRACTION][,share=FRACTION]; KIND is uniform,\n"
        "                        hotspot, sweep or wws; e.g. hotspot,size=64G,rate=200000\n"
        "  --trace FILE          replay a recorded trace (--loop: start over at its end)\n"
        "  --policy P[,P...]     precopy, fragmented, downtime or all (default all)\n"
        "  --bandwidth RATE      link, bytes/s (\"1gbit\", \"125M\"; default 1gbit)\n"
        "  --latency MS          one-way latency (default 0.1)\n"
        "  --ratio R             wire/raw bytes for a page's first send (default 1)\n"
        "  --resend-ratio R      wire/raw for a page sent before (delta; default = ratio)\n"
        "  --page-rate N         pipeline limit, pages/s (CPU; default none)\n"
        MS_TOOL_POLICY_HELP
        "  --hold-on-stop        fragmented: keep hot fragments for the pause when\n"
        "                        stopping (default: send all live once more)\n"
        "  --seed N              workload seed (overrides the model's)\n"
        "  --max-time S          virtual-time bound (default 3600)\n"
        "  --rounds              print every round, not just the comparison\n"
        "  --json                JSON: {\"migrations\":[...]}\n"
        "  --plot PREFIX         write PREFIX.png and PREFIX.svg (gnuplot)\n");
}

enum {
    O_MODEL = 1000, O_TRACE, O_LOOP, O_POLICY, O_BW, O_LAT, O_RATIO, O_RRATIO, O_PRATE,
    O_ROUNDS, O_SEED, O_MAXT, O_JSON, O_PLOT, O_TITLE, O_PRINT_ROUNDS, O_HOLD,
};

static const struct option opts[] = {
    {"model", required_argument, NULL, O_MODEL},
    {"trace", required_argument, NULL, O_TRACE},
    {"loop", no_argument, NULL, O_LOOP},
    {"policy", required_argument, NULL, O_POLICY},
    {"bandwidth", required_argument, NULL, O_BW},
    {"latency", required_argument, NULL, O_LAT},
    {"ratio", required_argument, NULL, O_RATIO},
    {"resend-ratio", required_argument, NULL, O_RRATIO},
    {"page-rate", required_argument, NULL, O_PRATE},
    MS_TOOL_POLICY_LONGOPTS,
    {"max-rounds", required_argument, NULL, O_ROUNDS},
    {"seed", required_argument, NULL, O_SEED},
    {"max-time", required_argument, NULL, O_MAXT},
    {"json", no_argument, NULL, O_JSON},
    {"plot", required_argument, NULL, O_PLOT},
    {"plot-title", required_argument, NULL, O_TITLE},
    {"rounds", no_argument, NULL, O_PRINT_ROUNDS},
    {"hold-on-stop", no_argument, NULL, O_HOLD},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse_one(void *ctx, int c, const char *v)
{
    sim_args *a = ctx;
    uint64_t u;
    double d = 0;
    int rc;
    switch (c) {
    case O_MODEL: a->model = v; return MS_OK;
    case O_TRACE: a->trace = v; return MS_OK;
    case O_LOOP: a->trace_loop = true; return MS_OK;
    case O_POLICY: return ms_tool_parse_policies(v, a->policies, &a->npolicies);
    case O_BW:
        if (ms_parse_rate(v, &u) || !u)
            return ms_error(MS_ERR_INVAL, "--bandwidth: bad rate '%s'", v);
        a->link.bandwidth = (double)u;
        return MS_OK;
    case O_LAT:
        if ((rc = ms_tool_number("--latency", v, 0, 10000, &d)))
            return rc;
        a->link.latency_s = d / 1000;
        return MS_OK;
    case O_RATIO: return ms_tool_number("--ratio", v, 0.0001, 2, &a->link.ratio);
    case O_RRATIO: return ms_tool_number("--resend-ratio", v, 0.0001, 2, &a->link.resend_ratio);
    case O_PRATE: return ms_tool_number("--page-rate", v, 1, 1e12, &a->link.page_rate);
    case MS_TOOL_OPT_DOWNTIME:
    case MS_TOOL_OPT_FRAGMENT_SIZE: return ms_tool_policy_option(c, v, &a->pcfg);
    case O_ROUNDS:
        return ms_tool_uint("--max-rounds", v, 1, 100000, &a->pcfg.max_rounds);
    case O_SEED:
        if ((rc = ms_tool_number("--seed", v, 0, 1e18, &d)))
            return rc;
        a->seed = (uint64_t)d;
        a->seed_set = true;
        return MS_OK;
    case O_MAXT: return ms_tool_number("--max-time", v, 1, 1e7, &a->max_s);
    case O_JSON: a->json = true; return MS_OK;
    case O_PLOT: a->plot = v; return MS_OK;
    case O_TITLE: a->plot_title = v; return MS_OK;
    case O_PRINT_ROUNDS: a->rounds = true; return MS_OK;
    case O_HOLD: a->pcfg.hold_on_stop = true; return MS_OK;
    default: return ms_error(MS_ERR_INVAL, "unknown option (see migstream sim --help)");
    }
}

static int parse_args(sim_args *a, int argc, char **argv, bool *help)
{
    ms_tool_parse_policies("all", a->policies, &a->npolicies);
    ms_policy_config_default(&a->pcfg);
    a->link.bandwidth = 125e6;
    a->link.latency_s = 0.0001;
    int rc = ms_tool_getopt(argc, argv, "h", opts, parse_one, a, help);
    if (rc || *help)
        return rc;
    if (optind < argc)
        return ms_error(MS_ERR_INVAL, "unexpected argument '%s'", argv[optind]);
    if (!a->model == !a->trace)
        return ms_error(MS_ERR_INVAL, "give exactly one of --model SPEC or --trace FILE");
    return MS_OK;
}

static int open_source(const sim_args *a, ms_page_source **src)
{
    if (a->trace) {
        ms_trace_opts to = {.loop = a->trace_loop, .seed = a->seed};
        return ms_trace_source_open(a->trace, &to, src);
    }
    ms_model_opts mo;
    int rc = ms_model_parse(a->model, &mo);
    if (rc)
        return ms_error_wrap(rc, "--model %s", a->model);
    if (a->seed_set)
        mo.seed = a->seed;
    return ms_model_source_create(&mo, src);
}

static int output(const sim_args *a, ms_migration_report *reps, size_t n)
{
    if (a->json) {
        ms_tool_reports_json(reps, n);
    } else {
        printf("workload: %s\nlink: %s, %s; downtime target %.0f ms\n", reps[0].source, reps[0].link,
               reps[0].chain, reps[0].downtime_target_ms);
        if (a->rounds)
            ms_tool_reports_print(reps, n);
        ms_report_compare(reps, n, stdout);
    }
    return ms_tool_reports_finish(reps, n, a->plot, "simulated: ", a->plot_title, a->json);
}

int cmd_sim(int argc, char **argv)
{
    sim_args a;
    memset(&a, 0, sizeof(a));
    bool help = false;
    int rc = parse_args(&a, argc, argv, &help);
    int parsed = ms_tool_parsed("sim", rc, help, usage);
    if (parsed >= 0)
        return parsed;
    ms_migration_report reps[MS_TOOL_MAX_POLICIES];
    memset(reps, 0, sizeof(reps));
    size_t done = 0;
    for (; done < a.npolicies && !rc; done++) {
        ms_page_source *src = NULL;
        rc = open_source(&a, &src);
        if (!rc)
            rc = ms_simulate(src, a.policies[done], &a.pcfg, &a.link, a.max_s, &reps[done]);
        ms_source_destroy(src);
    }
    if (rc) {
        fprintf(stderr, "migstream sim: %s\n", ms_last_error());
        done--;
    }
    if (done) {
        int orc = output(&a, reps, done);
        if (orc && !rc) {
            fprintf(stderr, "migstream sim: %s\n", ms_last_error());
            rc = orc;
        }
    }
    for (size_t i = 0; i < a.npolicies; i++)
        ms_report_free(&reps[i]);
    return ms_exit_code(rc);
}
