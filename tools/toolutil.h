/* Helpers shared by the migstream subcommands: option values, failure
 * reporting with exit codes, a progress line, JSON strings, connections,
 * keys, the built-in sample image and a sink that shows progress. */
#ifndef MS_TOOLUTIL_H
#define MS_TOOLUTIL_H

#include <getopt.h>
#include <stdio.h>

#include "fragsched/fragsched.h"
#include "stream/stream.h"
#include "tools/tools.h"

/* Report a failure as "migstream CMD: MESSAGE" on stderr (the message of
 * the calling thread's last error) and return the exit code for rc. */
int ms_tool_fail(const char *cmd, int rc);
/* Report a usage error and return MS_EXIT_USAGE. */
int ms_tool_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Option values with their ranges; on a bad value print why (naming the
 * option) and return MS_ERR_INVAL. */
int ms_opt_uint(const char *cmd, const char *opt, const char *arg, unsigned min, unsigned max, unsigned *out);
int ms_opt_u64(const char *cmd, const char *opt, const char *arg, uint64_t *out);
int ms_opt_fraction(const char *cmd, const char *opt, const char *arg, double *out);
int ms_opt_size(const char *cmd, const char *opt, const char *arg, uint64_t *out);
int ms_opt_rate(const char *cmd, const char *opt, const char *arg, uint64_t *out);
int ms_opt_duration(const char *cmd, const char *opt, const char *arg, uint64_t *ms);

/* A one-line progress display on stderr, only when stderr is a terminal;
 * redrawn at most 10 times a second. */
typedef struct ms_progress {
    bool on;
    uint64_t t0, last;
} ms_progress;
void ms_progress_init(ms_progress *p, bool quiet);
void ms_progress_update(ms_progress *p, bool force, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void ms_progress_done(ms_progress *p);

/* JSON string with escapes. */
void ms_json_str(FILE *f, const char *s);
/* {"code":-6,"name":"...","message":"..."} */
void ms_json_error(FILE *f, int rc, const char *msg);

/* N TCP connections to "host:port" ("[v6]:port" too). */
int ms_tool_connect(const char *hostport, unsigned n, uint64_t timeout_ms, ms_conn **conns);
/* Listen on "host:port" (port 0 picks one). */
int ms_tool_listen(const char *hostport, uint64_t timeout_ms, ms_listener **l);

/* The network transports behind --transport: "tcp", and "rdma" when this
 * build has it (MS_HAVE_RDMA). Check a tool's --transport NAME and
 * --rdma-opts SPEC (NULL when not given) at option time: MS_OK, or a usage
 * message printed and MS_ERR_INVAL (MS_ERR_UNSUPPORTED for rdma in a build
 * without it). Other transports (fd) are the caller's to handle first. */
int ms_tool_check_transport(const char *cmd, const char *transport, const char *rdma_opts);
/* ms_tool_connect / ms_tool_listen over `transport`. For rdma, --timeout
 * and a few connect retries are the defaults that rdma_opts may override,
 * and a machine without an RDMA device fails at once with MS_ERR_UNSUPPORTED
 * ("no RDMA device ...") rather than in the connection manager. */
int ms_tool_connect_via(const char *transport, const char *rdma_opts, const char *hostport, unsigned n,
                        uint64_t timeout_ms, ms_conn **conns);
int ms_tool_listen_via(const char *transport, const char *rdma_opts, const char *hostport, uint64_t timeout_ms,
                       ms_listener **l);
/* What `--transport rdma` prints in a build without the RDMA transport. */
#define MS_TOOL_NO_RDMA_MSG \
    "this build has no RDMA transport: install libibverbs-dev and librdmacm-dev and rebuild (meson feature rdma)"

/* The built-in sample: page `pfn` at version `version` (0 = as first
 * sent); zero pages, text, pointer-rich structures and random bytes in
 * about the proportions of a running guest. Deterministic for a seed, so a
 * page can be regenerated instead of stored. */
void ms_tool_sample_page(uint8_t *page, uint64_t pfn, uint32_t version, uint64_t seed);

/* splitmix64 step. */
uint64_t ms_tool_rng(uint64_t *state);

/* A sink that counts what passes to `inner` and keeps a progress line. */
typedef struct ms_progress_sink {
    const ms_sink_ops *inner;
    void *inner_ctx;
    ms_progress *progress;
    uint64_t pages, opaque_bytes;
    uint32_t round;
    uint64_t t0;
} ms_progress_sink;
extern const ms_sink_ops ms_progress_sink_ops;

/* Human-readable bytes ("1.5 GiB") into buf. */
const char *ms_tool_bytes(uint64_t b, char *buf, size_t n);

/* ---- shared by migrate and sim --------------------------------------------
 * These set the message with ms_error() and return a negative code: the
 * caller prints it. */

/* getopt_long over argv from optind 1, without getopt's own messages: 'h'
 * (and --help mapped to it) sets *help and stops; an unknown or incomplete
 * option is MS_ERR_INVAL naming it; every other option goes to
 * `option(ctx, c, optarg)`, whose failure ends the parse. */
typedef int (*ms_tool_option_fn)(void *ctx, int c, const char *arg);
int ms_tool_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts,
                   ms_tool_option_fn option, void *ctx, bool *help);

/* A decimal number in lo..hi: "OPT: 'S' is not a number in LO..HI". */
int ms_tool_number(const char *opt, const char *s, double lo, double hi, double *out);
/* A whole decimal number in lo..hi ("2.5" and "-1" refused):
 * "OPT: 'S' is not a whole number in LO..HI". */
int ms_tool_uint(const char *opt, const char *s, unsigned lo, unsigned hi, unsigned *out);

/* --policy P[,P...] ("all": precopy,fragmented,downtime) into names[]
 * (static strings), at most MS_TOOL_MAX_POLICIES. */
#define MS_TOOL_MAX_POLICIES 8
int ms_tool_parse_policies(const char *text, const char **names, size_t *n);

/* The scheduler options both commands take: put MS_TOOL_POLICY_LONGOPTS in
 * the option table, MS_TOOL_POLICY_HELP in the usage text, and hand
 * MS_TOOL_OPT_DOWNTIME and MS_TOOL_OPT_FRAGMENT_SIZE to
 * ms_tool_policy_option. --max-rounds is each command's own to parse. */
enum { MS_TOOL_OPT_DOWNTIME = 900, MS_TOOL_OPT_FRAGMENT_SIZE };
#define MS_TOOL_POLICY_LONGOPTS                                        \
    {"downtime", required_argument, NULL, MS_TOOL_OPT_DOWNTIME},       \
    {"fragment-size", required_argument, NULL, MS_TOOL_OPT_FRAGMENT_SIZE}
#define MS_TOOL_POLICY_HELP                                                   \
    "  --downtime MS         downtime target (default 300)\n"                 \
    "  --fragment-size SIZE  fragment size, multiple of 256K (default 2M)\n" \
    "  --max-rounds N        safety bound on live rounds (default 30)\n"
int ms_tool_policy_option(int opt, const char *arg, ms_policy_config *pc);

/* The process a command tracks (migrate, dirtyrate): --pid PID [--children]
 * or -- COMMAND, started under dirty tracking, optionally waited for
 * (--ready TEXT in its output, then --warmup SECONDS). Put
 * MS_TOOL_PROC_LONGOPTS in the option table, MS_TOOL_PROC_HELP in the
 * usage text, and hand the MS_TOOL_OPT_* below to ms_tool_proc_option. */
enum {
    MS_TOOL_OPT_PID = 920, MS_TOOL_OPT_CHILDREN, MS_TOOL_OPT_WARMUP, MS_TOOL_OPT_READY,
    MS_TOOL_OPT_CMDOUT, MS_TOOL_OPT_MAXMEM,
};
#define MS_TOOL_PROC_LONGOPTS                                              \
    {"pid", required_argument, NULL, MS_TOOL_OPT_PID},                     \
    {"children", no_argument, NULL, MS_TOOL_OPT_CHILDREN},                 \
    {"warmup", required_argument, NULL, MS_TOOL_OPT_WARMUP},               \
    {"ready", required_argument, NULL, MS_TOOL_OPT_READY},                 \
    {"command-output", required_argument, NULL, MS_TOOL_OPT_CMDOUT},       \
    {"max-memory", required_argument, NULL, MS_TOOL_OPT_MAXMEM}
#define MS_TOOL_PROC_HELP                                                            \
    "  --pid PID             attach to a running process (and its threads)\n"        \
    "  --children            with --pid: also track its descendants\n"               \
    "  --warmup SECONDS      let a started COMMAND run first (default 2)\n"          \
    "  --ready TEXT          wait until COMMAND prints TEXT (then --warmup)\n"       \
    "  --command-output FILE where COMMAND's stdout/stderr go (default /dev/null)\n" \
    "  --max-memory SIZE     most memory the process may grow to (default 16G)\n"

typedef struct ms_tool_proc {
    int pid;
    bool children;
    char **command;
    const char *command_output;
    const char *ready;   /* wait for this text in COMMAND's output */
    char ready_file[64]; /* temporary output file when waiting */
    double warmup_s;
    uint64_t max_pages;
} ms_tool_proc;
void ms_tool_proc_init(ms_tool_proc *p);
int ms_tool_proc_option(ms_tool_proc *p, int opt, const char *arg);
/* After the options: `rest` = the words after them (the COMMAND). */
int ms_tool_proc_check(ms_tool_proc *p, char **rest);
/* Start or attach (MS_ERR_UNSUPPORTED when this kernel or these rights
 * cannot track a process), wait until it is ready. */
int ms_tool_proc_open(const ms_tool_proc *p, ms_page_source **src);
/* Remove the temporary output file, if one was made. */
void ms_tool_proc_cleanup(ms_tool_proc *p);

/* What parse_args left: MS_EXIT_OK after printing `usage` for --help,
 * MS_EXIT_USAGE after "migstream CMD: MESSAGE" for a bad option (rc < 0),
 * or -1 to go on. */
int ms_tool_parsed(const char *cmd, int rc, bool help, void (*usage)(FILE *f));

/* The reports on stdout: as {"migrations":[...]}, or each after an empty
 * line. */
void ms_tool_reports_json(const ms_migration_report *reps, size_t n);
void ms_tool_reports_print(const ms_migration_report *reps, size_t n);
/* After the reports are printed: flush stdout; with a plot prefix, write
 * PREFIX.png and PREFIX.svg titled title_prefix followed by plot_title (or
 * the first report's source) and, unless the output is JSON, say so. */
int ms_tool_reports_finish(const ms_migration_report *reps, size_t n, const char *plot, const char *title_prefix,
                           const char *plot_title, bool json);


/* ---- shared by recv and replay: the network options ---------------------
 * Put MS_TOOL_NET_LONGOPTS (with the command's values for --transport and
 * --rdma-opts; the others are 'k', 'w', 'T', 'j', 'q', 'h') at the end of
 * the option table, hand each getopt result to ms_tool_net_option before
 * the command's own switch, and call ms_tool_net_check after the loop. */
typedef struct ms_tool_net {
    const char *transport, *rdma_opts, *key_file; /* transport: set a default */
    unsigned workers;
    uint64_t timeout_ms;
    bool json, quiet;
    bool fd;                                      /* --transport fd */
    uint8_t key[MS_KEY_SIZE];
    bool have_key;                                /* --key loaded */
} ms_tool_net;
#define MS_TOOL_NET_LONGOPTS(transport_c, rdma_c)                                                    \
    {"transport", required_argument, NULL, transport_c}, {"rdma-opts", required_argument, NULL, rdma_c}, \
    {"key", required_argument, NULL, 'k'}, {"workers", required_argument, NULL, 'w'},                \
    {"timeout", required_argument, NULL, 'T'}, {"json", no_argument, NULL, 'j'},                     \
    {"quiet", no_argument, NULL, 'q'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}
/* 1: c was a network option, stored; 0: it is the command's; -1: its value
 * is bad (the reason printed). */
int ms_tool_net_option(const char *cmd, ms_tool_net *n, int c, int transport_c, int rdma_c, const char *arg);
/* A transport this build has (tcp, rdma) or fd, and --rdma-opts only with
 * rdma; sets n->fd. 0, or -1 after the usage message. */
int ms_tool_net_check(const char *cmd, ms_tool_net *n);
/* Load --key FILE when given: MS_EXIT_OK, or the exit code after
 * "migstream CMD: MESSAGE". */
int ms_tool_net_load_key(const char *cmd, ms_tool_net *n);

#endif
