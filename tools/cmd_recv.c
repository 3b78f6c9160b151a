/* `migstream recv`: listen, receive one or more sessions, write each to a
 * file or discard it, and report its stats and the digest of the image it
 * rebuilt (compare it with the one `migstream replay` prints). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/toolutil.h"

#define CMD "recv"

typedef struct recv_opts {
    ms_tool_net net;
    const char *listen, *out, *opaque_out;
    bool discard, insecure;
    unsigned sessions;
    uint64_t accept_timeout_ms, max_image;
} recv_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: migstream recv --listen HOST:PORT [--key FILE | --insecure] (--out FILE | --discard)\n"
            "                      [--sessions N] [--transport tcp|fd|rdma [--rdma-opts SPEC]]\n"
            "                      [--json] [OPTIONS]\n"
            "\n"
            "Receive migstream sessions and rebuild the memory image each one carries.\n"
            "Prints per session: rounds, pages, bytes on the wire, ratio, time, CPU, and\n"
            "the image digest (XXH3-64 over the per-page XXH3-64 hashes, pfn 0 upward)\n"
            "that `migstream replay` prints for its source.\n"
            "\n"
            "  -l, --listen HOST:PORT   address to listen on (IPv4, [IPv6] or a name; port 0\n"
            "                           picks a free one; the bound address goes to stderr)\n"
            "  -k, --key FILE           pre-shared key (migstream keygen): both sides prove\n"
            "                           it and every frame is sealed\n"
            "      --insecure           allow unsealed sessions on a listener reachable from\n"
            "                           other hosts (without it, such a listener needs --key)\n"
            "  -o, --out FILE           write pages at pfn * 4096 into FILE (FILE.2, FILE.3,\n"
            "                           ... for later sessions)\n"
            "      --opaque-out FILE    append the opaque records to FILE\n"
            "  -d, --discard            keep nothing (the digest and hash checks still run)\n"
            "  -n, --sessions N         sessions to serve, 0 = until killed (default 1)\n"
            "  -t, --transport tcp|fd|rdma\n"
            "                           tcp (default); fd: one session on stdin, answers on\n"
            "                           stdout, report on stderr (for ssh or a pipe); rdma:\n"
            "                           RDMA (RoCE, InfiniBand, Soft-RoCE) from `replay\n"
            "                           --transport rdma`; --listen must be an address of a\n"
            "                           netdev with an RDMA device (Soft-RoCE cannot use\n"
            "                           127.0.0.1)\n"
            "      --rdma-opts SPEC     rdma tuning, e.g. slots=64,slot-size=256K,ack-timeout=18,\n"
            "                           retry=7,zcopy-min=64K,reg-cache=16,timeout=10s (any subset)\n"
            "  -w, --workers N          decode threads (default: number of cores)\n"
            "      --timeout DUR        peer silence that ends a session (default 10s)\n"
            "      --accept-timeout DUR give up when no session arrives (default: wait)\n"
            "      --max-image SIZE     refuse pfns beyond this image size (default 64G)\n"
            "  -j, --json               one JSON object per session on stdout\n"
            "  -q, --quiet              no progress line\n"
            "  -h, --help               this help\n"
            "\n"
            "Exit status: 0 ok, 1 failure, 2 usage, 3 data differs, 4 peer or transport\n"
            "failure, 5 authentication or integrity failure.\n");
}

static int parse(int argc, char **argv, recv_opts *o)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},   {"insecure", no_argument, NULL, 'I'},
        {"out", required_argument, NULL, 'o'},      {"opaque-out", required_argument, NULL, 'O'},
        {"discard", no_argument, NULL, 'd'},        {"sessions", required_argument, NULL, 'n'},
        {"accept-timeout", required_argument, NULL, 'A'}, {"max-image", required_argument, NULL, 'M'},
        MS_TOOL_NET_LONGOPTS('t', 'R'),
    };
    int c;
    memset(o, 0, sizeof *o);
    o->sessions = 1;
    o->net.transport = "tcp";
    optind = 1;
    while ((c = getopt_long(argc, argv, "l:k:o:dn:t:w:jqh", opts, NULL)) != -1) {
        int rc = ms_tool_net_option(CMD, &o->net, c, 't', 'R', optarg);
        switch (rc ? 0 : c) {
        case 0: break;
        case 'l': o->listen = optarg; break;
        case 'I': o->insecure = true; break;
        case 'o': o->out = optarg; break;
        case 'O': o->opaque_out = optarg; break;
        case 'd': o->discard = true; break;
        case 'n': rc = ms_opt_uint(CMD, "--sessions", optarg, 0, 1000000, &o->sessions); break;
        case 'A': rc = ms_opt_duration(CMD, "--accept-timeout", optarg, &o->accept_timeout_ms); break;
        case 'M': rc = ms_opt_size(CMD, "--max-image", optarg, &o->max_image); break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
        if (rc < 0)
            return -1;
    }
    if (optind != argc)
        return ms_tool_usage_error(CMD, "unexpected argument '%s'", argv[optind]), -1;
    if (ms_tool_net_check(CMD, &o->net) < 0)
        return -1;
    bool fd = o->net.fd;
    if (!fd && !o->listen)
        return ms_tool_usage_error(CMD, "--listen HOST:PORT is required"), -1;
    if (fd && o->listen)
        return ms_tool_usage_error(CMD, "--listen does not apply to --transport fd (it reads stdin)"), -1;
    if (fd && o->sessions != 1)
        return ms_tool_usage_error(CMD, "--transport fd serves exactly one session"), -1;
    if (!o->out == !o->discard)
        return ms_tool_usage_error(CMD, "give either --out FILE or --discard"), -1;
    if (o->net.key_file && o->insecure)
        return ms_tool_usage_error(CMD, "--key and --insecure exclude each other"), -1;
    return 0;
}

typedef struct session_sinks {
    ms_file_sink file;
    ms_digest_sink digest;
    ms_progress_sink progress;
    ms_progress bar;
    int fd, opaque_fd;
} session_sinks;

static int sinks_open(const recv_opts *o, unsigned index, session_sinks *s, char *path, size_t pn)
{
    memset(s, 0, sizeof *s);
    s->fd = s->opaque_fd = -1;
    ms_progress_init(&s->bar, o->net.quiet || o->net.json);
    s->digest.max_pages = o->max_image ? o->max_image / MS_PAGE_SIZE : 0;
    if (o->out) {
        if (index > 1)
            snprintf(path, pn, "%s.%u", o->out, index);
        else
            snprintf(path, pn, "%s", o->out);
        s->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (s->fd < 0)
            return ms_error(MS_ERR_IO, "cannot create %s: %s", path, strerror(errno));
        s->file.fd = s->fd;
        s->file.opaque_fd = -1;
        s->digest.inner = &ms_file_sink_ops;
        s->digest.inner_ctx = &s->file;
    } else {
        path[0] = 0;
        s->digest.inner = &ms_discard_sink_ops;
    }
    if (o->opaque_out) {
        s->opaque_fd = open(o->opaque_out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (s->opaque_fd < 0)
            return ms_error(MS_ERR_IO, "cannot open %s: %s", o->opaque_out, strerror(errno));
        s->file.opaque_fd = s->opaque_fd;
        if (!o->out) {
            s->file.fd = -1; /* pages are discarded, opaque records kept */
            s->digest.inner = &ms_file_sink_ops;
        }
    }
    s->progress.inner = &ms_digest_sink_ops;
    s->progress.inner_ctx = &s->digest;
    s->progress.progress = &s->bar;
    return MS_OK;
}

static int sinks_close(session_sinks *s, int rc)
{
    ms_progress_done(&s->bar);
    if (s->fd >= 0 && close(s->fd) < 0 && rc == MS_OK)
        rc = ms_error(MS_ERR_IO, "closing the output: %s", strerror(errno));
    if (s->opaque_fd >= 0)
        close(s->opaque_fd);
    return rc; /* the digest stays for the report: sinks_free */
}

static void sinks_free(session_sinks *s) { ms_digest_sink_free(&s->digest); }



static void report(FILE *f, const recv_opts *o, unsigned index, const ms_hello *h, const char *peer,
                   const char *path, const session_sinks *s, const ms_stats *st, int rc, const char *msg)
{
    char sid[2 * MS_SESSION_ID_SIZE + 1];
    for (unsigned i = 0; i < MS_SESSION_ID_SIZE; i++)
        snprintf(sid + 2 * i, 3, "%02x", h->session_id[i]);
    uint64_t digest = ms_digest_sink_value(&s->digest);
    if (o->net.json) {
        fprintf(f, "{\"session\":%u,\"id\":\"%s\",\"peer\":", index, sid);
        ms_json_str(f, peer);
        fprintf(f, ",\"channels\":%u,\"chain\":", h->channels);
        ms_json_str(f, h->chain);
        fprintf(f, ",\"sealed\":%s,\"result\":\"%s\",", (h->flags & MS_HELLO_F_SEALED) ? "true" : "false",
                rc == MS_OK ? "ok" : "error");
        if (rc < 0) {
            fputs("\"error\":", f);
            ms_json_error(f, rc, msg);
            fputc(',', f);
        }
        fprintf(f, "\"image_pages\":%" PRIu64 ",\"image_digest\":\"%016" PRIx64 "\",\"opaque_bytes\":%" PRIu64
                   ",\"opaque_digest\":\"%016" PRIx64 "\",\"out\":",
                s->digest.npages, digest, s->digest.opaque_bytes, ms_digest_sink_opaque(&s->digest));
        ms_json_str(f, path);
        fputs(",\"stats\":", f);
        ms_stats_json(st, f);
        fputs("}\n", f);
        fflush(f);
        return;
    }
    fprintf(f, "session %u (%s) from %s: %u channel%s, chain %s, %s\n", index, sid, peer, h->channels,
            h->channels == 1 ? "" : "s", h->chain, (h->flags & MS_HELLO_F_SEALED) ? "sealed" : "not sealed");
    ms_stats_print(st, "received", f);
    fprintf(f, "image digest %016" PRIx64 " (%" PRIu64 " pages%s%s)\n", digest, s->digest.npages,
            path[0] ? ", written to " : "", path);
    if (s->digest.opaque_bytes)
        fprintf(f, "opaque records: %" PRIu64 " bytes, digest %016" PRIx64 "\n", s->digest.opaque_bytes,
                ms_digest_sink_opaque(&s->digest));
    if (rc == MS_OK)
        fprintf(f, "result: ok, every frame's hash verified\n");
    else
        fprintf(f, "result: FAILED: %s\n", msg);
    fflush(f);
}

static ms_session_config session_cfg(const recv_opts *o)
{
    ms_session_config cfg = {
        .workers = o->net.workers,
        .timeout_ms = o->net.timeout_ms,
        .key = o->net.have_key ? o->net.key : NULL,
        .insecure = o->insecure,
    };
    return cfg;
}

static int serve_fd(recv_opts *o)
{
    ms_session_config cfg = session_cfg(o);
    session_sinks s;
    ms_stats st = {0};
    ms_hello h = {0};
    ms_conn *c = NULL;
    char path[4096], msg[512] = "";
    int rc = sinks_open(o, 1, &s, path, sizeof path);
    if (rc == MS_OK)
        rc = ms_fd_conn_new(STDIN_FILENO, STDOUT_FILENO, false, &c);
    if (rc == MS_OK)
        rc = ms_receive_stream(c, &cfg, &ms_progress_sink_ops, &s.progress, &st, &h);
    if (rc < 0)
        snprintf(msg, sizeof msg, "%s", ms_last_error());
    ms_conn_close(c);
    rc = sinks_close(&s, rc);
    if (rc < 0 && !msg[0])
        snprintf(msg, sizeof msg, "%s", ms_last_error());
    report(stderr, o, 1, &h, "stdin", path, &s, &st, rc, msg);
    sinks_free(&s);
    ms_stats_free(&st);
    return rc;
}

static int serve_one(recv_opts *o, ms_listener *l, unsigned index, bool *accept_failed)
{
    ms_session_config cfg = session_cfg(o);
    session_sinks s;
    ms_accepted a;
    ms_hello hello;
    ms_stats st = {0};
    char path[4096], msg[512] = "", peer[96];
    int rc = ms_accept_session(l, &cfg, o->accept_timeout_ms, &a);
    *accept_failed = rc < 0;
    if (rc < 0) {
        ms_tool_fail(CMD, rc);
        return rc;
    }
    hello = a.hello;
    snprintf(peer, sizeof peer, "%s", a.conns[0]->peer);
    rc = sinks_open(o, index, &s, path, sizeof path);
    if (rc == MS_OK)
        rc = ms_receiver_run(&cfg, &a.hello, a.conns, a.keys, a.nconns, &ms_progress_sink_ops, &s.progress, &st);
    if (rc < 0)
        snprintf(msg, sizeof msg, "%s", ms_last_error());
    ms_accepted_free(&a);
    rc = sinks_close(&s, rc);
    if (rc < 0 && !msg[0])
        snprintf(msg, sizeof msg, "%s", ms_last_error());
    report(stdout, o, index, &hello, peer, path, &s, &st, rc, msg);
    if (rc < 0 && !o->net.json)
        fprintf(stderr, "migstream recv: session %u: %s\n", index, msg);
    sinks_free(&s);
    ms_stats_free(&st);
    return rc;
}

int cmd_recv(int argc, char **argv)
{
    recv_opts o;
    ms_listener *l = NULL;
    int rc, first_rc = MS_OK;
    int p = parse(argc, argv, &o);
    if (p)
        return p > 0 ? MS_EXIT_OK : MS_EXIT_USAGE;
    if ((rc = ms_tool_net_load_key(CMD, &o.net)) != MS_EXIT_OK)
        return rc;
    if (!strcmp(o.net.transport, "fd")) {
        rc = serve_fd(&o);
        return ms_exit_code(rc);
    }
    if ((rc = ms_tool_listen_via(o.net.transport, o.net.rdma_opts, o.listen, o.net.timeout_ms, &l)) < 0)
        return ms_tool_fail(CMD, rc);
    if (!l->loopback_only && !o.net.have_key && !o.insecure) {
        fprintf(stderr, "migstream recv: refusing to listen on %s without a key: it is reachable from other "
                        "hosts. Give --key FILE (make one with `migstream keygen FILE`), or --insecure to "
                        "accept unsealed sessions anyway.\n", l->addr);
        ms_listener_close(l);
        return MS_EXIT_SECURITY;
    }
    fprintf(stderr, "migstream recv: listening on %s%s\n", l->addr,
            o.net.have_key ? " (key required)" : (l->loopback_only ? "" : " (INSECURE: no key)"));
    fflush(stderr);
    for (unsigned i = 1; o.sessions == 0 || i <= o.sessions; i++) {
        bool accept_failed;
        rc = serve_one(&o, l, i, &accept_failed);
        if (rc < 0 && first_rc == MS_OK)
            first_rc = rc;
        /* A failed session does not stop the service; a failed accept
         * (no session within --accept-timeout, a broken listener) does. */
        if (accept_failed)
            break;
    }
    ms_listener_close(l);
    return ms_exit_code(first_rc);
}
