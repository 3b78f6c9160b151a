/* Helpers shared by the migstream subcommands: option values, failure
 * reporting with exit codes, a progress line, JSON strings, connections,
 * keys, the built-in sample image and a sink that shows progress. */
#ifndef MS_TOOLUTIL_H
#define MS_TOOLUTIL_H

#include <stdio.h>

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

#endif
