/* libmigstream-xen.so: an LD_PRELOAD library for `xl migrate` and
 * `xl migrate-receive` (it runs inside libxl-save-helper).
 *
 * It wraps xc_domain_save / xc_domain_restore (symbol version VERS_4.17.0):
 * libxc writes into / reads from a pipe, and a pump thread carries the
 * libxc stream through a migstream session, either on libxl's own fd
 * ("inband") or on side TCP or RDMA connections announced by a token on
 * libxl's fd. xc_logdirty_control is wrapped to mark round boundaries.
 *
 * With no MIGSTREAM_* variable in the environment every wrapper calls the
 * real function with the caller's arguments and does nothing else. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenguest.h>

#include "fragsched/fragsched.h"
#include "ms_config.h"
#include "tcp/tcp.h"
#include "xen/xen.h"
#if MS_HAVE_RDMA
#include "rdma/rdma.h"
#endif

#define XC_VERSION "VERS_4.17.0"
#define TOKEN_MAGIC "MSXENTK1"
#define TOKEN_SIZE 32u /* magic, session id, channels u16, side transport u8, reserved */
#define TOKEN_TRANSPORT_OFF 26u /* 0: tcp (all tokens before rdma), 1: rdma */
#define NO_RDMA_BUILD_MSG                                                                                 \
    "MIGSTREAM_TRANSPORT=rdma: this build of the preload has no RDMA transport (rebuild migstream with " \
    "libibverbs-dev and librdmacm-dev installed, meson feature rdma)"

extern char **environ;

/* ---- configuration from the environment ------------------------------ */

enum transport { T_INBAND, T_TCP, T_RDMA };

typedef struct xcfg {
    enum transport transport;
    ms_chain chain;
    unsigned channels;
    bool have_key;
    uint8_t key[MS_KEY_SIZE];
    uint64_t max_bandwidth;
    uint64_t delta_cache, dedup_cache; /* 0: the stream layer's default */
    uint64_t timeout_ms;
    unsigned workers;
    char peer[256], listen[256];
    const char *rdma_opts;   /* MIGSTREAM_RDMA_OPTS, checked at parse time */
    const char *record;
    bool fragmented;         /* MIGSTREAM_SCHED=fragmented */
    ms_policy_config policy; /* its parameters */
} xcfg;

static bool env_active(void)
{
    for (char **e = environ; e && *e; e++)
        if (!strncmp(*e, "MIGSTREAM_", 10))
            return true;
    return false;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* A page-store size (delta cache, dedup index): only the sender's counts,
 * the receiver adopts it from the hello up to MS_MAX_PAGE_STORE. */
static int store_env(const char *name, uint64_t *out)
{
    const char *v = env(name);
    int rc = v ? ms_page_store_parse(v, out) : MS_OK;
    return rc < 0 ? ms_error_wrap(rc, "%s=%s", name, v) : MS_OK;
}

#if MS_HAVE_RDMA
/* MIGSTREAM_RDMA_OPTS over the preload's defaults (MIGSTREAM_TIMEOUT, the
 * connect retries of tcp). */
static int rdma_options(const xcfg *c, ms_rdma_options *o)
{
    memset(o, 0, sizeof(*o));
    o->timeout_ms = c->timeout_ms;
    o->connect_retries = 20;
    int rc = c->rdma_opts ? ms_rdma_options_parse(c->rdma_opts, o) : MS_OK;
    return rc ? ms_error_wrap(rc, "MIGSTREAM_RDMA_OPTS=%s", c->rdma_opts) : MS_OK;
}
#endif

/* Everything that can be known before libxc starts: the options, and on
 * the sender that this machine has an RDMA device at all (the receiver
 * checks when a session announces rdma: a sender may still use inband). */
static int check_rdma(const xcfg *c, bool sender)
{
#if MS_HAVE_RDMA
    ms_rdma_options o;
    int rc = rdma_options(c, &o);
    if (!rc && sender && (rc = ms_rdma_available()))
        rc = ms_error_wrap(rc, "MIGSTREAM_TRANSPORT=rdma");
    return rc;
#else
    (void)c;
    (void)sender;
    return ms_error(MS_ERR_UNSUPPORTED, NO_RDMA_BUILD_MSG);
#endif
}

static int parse_cfg(xcfg *c, bool sender)
{
    const char *v;
    memset(c, 0, sizeof(*c));
    c->channels = 1;
    c->timeout_ms = MS_DEFAULT_TIMEOUT_MS;
    if ((v = env("MIGSTREAM_LOG"))) {
        int lvl = ms_log_level_parse(v);
        if (lvl < 0)
            return ms_error(MS_ERR_INVAL, "MIGSTREAM_LOG=%s: use error, info or debug", v);
        ms_log_set_level(lvl);
    }
    v = env("MIGSTREAM_TRANSPORT");
    if (!v || !strcmp(v, "inband"))
        c->transport = T_INBAND;
    else if (!strcmp(v, "tcp"))
        c->transport = T_TCP;
    else if (!strcmp(v, "rdma") && MS_HAVE_RDMA)
        c->transport = T_RDMA;
    else if (!strcmp(v, "rdma"))
        return ms_error(MS_ERR_UNSUPPORTED, NO_RDMA_BUILD_MSG);
    else
        return ms_error(MS_ERR_INVAL, "MIGSTREAM_TRANSPORT=%s: use inband, tcp or rdma", v);
    int rc = ms_chain_parse(env("MIGSTREAM_CODEC") ? env("MIGSTREAM_CODEC") : "zero,delta,lz4", &c->chain);
    if (rc)
        return ms_error_wrap(rc, "MIGSTREAM_CODEC");
    if ((v = env("MIGSTREAM_CHANNELS"))) {
        char *end;
        unsigned long n = strtoul(v, &end, 10);
        if (*end || n < 1 || n > 64)
            return ms_error(MS_ERR_INVAL, "MIGSTREAM_CHANNELS=%s: a count from 1 to 64", v);
        c->channels = (unsigned)n;
    }
    if (c->transport == T_INBAND && c->channels != 1)
        return ms_error(MS_ERR_INVAL, "MIGSTREAM_CHANNELS=%u: inband has one channel (libxl's fd); use tcp",
                        c->channels);
    if ((v = env("MIGSTREAM_WORKERS"))) {
        char *end;
        unsigned long n = strtoul(v, &end, 10);
        if (*end || n > 256)
            return ms_error(MS_ERR_INVAL, "MIGSTREAM_WORKERS=%s: a count from 0 (cores) to 256", v);
        c->workers = (unsigned)n;
    }
    if ((v = env("MIGSTREAM_KEY_FILE"))) {
        if ((rc = ms_key_load(v, c->key)))
            return ms_error_wrap(rc, "MIGSTREAM_KEY_FILE=%s", v);
        c->have_key = true;
    }
    if ((v = env("MIGSTREAM_MAX_BANDWIDTH")) && ms_parse_rate(v, &c->max_bandwidth))
        return ms_error(MS_ERR_INVAL, "MIGSTREAM_MAX_BANDWIDTH=%s: a rate such as 100M or 1gbit", v);
    if ((rc = store_env("MIGSTREAM_DELTA_CACHE", &c->delta_cache)) ||
        (rc = store_env("MIGSTREAM_DEDUP_CACHE", &c->dedup_cache)))
        return rc;
    if ((v = env("MIGSTREAM_TIMEOUT")) && ms_parse_duration_ms(v, &c->timeout_ms))
        return ms_error(MS_ERR_INVAL, "MIGSTREAM_TIMEOUT=%s: a duration such as 10s", v);
    ms_policy_config_default(&c->policy);
    if ((v = env("MIGSTREAM_SCHED")) && strcmp(v, "xen")) {
        if (strcmp(v, "fragmented"))
            return ms_error(MS_ERR_INVAL, "MIGSTREAM_SCHED=%s: use xen (libxc's own policy) or fragmented", v);
        c->fragmented = true;
    }
    if ((v = env("MIGSTREAM_DOWNTIME"))) {
        uint64_t ms;
        if (ms_parse_duration_ms(v, &ms) || ms == 0)
            return ms_error(MS_ERR_INVAL, "MIGSTREAM_DOWNTIME=%s: a downtime target such as 300ms", v);
        c->policy.downtime_ms = (double)ms;
    }
    c->record = env("MIGSTREAM_RECORD");
    if (c->transport != T_INBAND) {
        const char *name = sender ? "MIGSTREAM_PEER" : "MIGSTREAM_LISTEN";
        if (!(v = env(name)))
            return ms_error(MS_ERR_INVAL, "MIGSTREAM_TRANSPORT=%s needs %s=HOST:PORT",
                            c->transport == T_TCP ? "tcp" : "rdma", name);
        snprintf(sender ? c->peer : c->listen, sizeof(c->peer), "%s", v);
    }
    c->rdma_opts = env("MIGSTREAM_RDMA_OPTS");
    return c->transport == T_RDMA ? check_rdma(c, sender) : MS_OK;
}

static void fill_session(const xcfg *c, ms_session_config *s)
{
    memset(s, 0, sizeof(*s));
    s->chain = c->chain;
    s->workers = c->workers;
    s->timeout_ms = c->timeout_ms;
    s->max_bandwidth = c->max_bandwidth;
    s->delta_cache_bytes = c->delta_cache;
    s->dedup_bytes = c->dedup_cache;
    s->key = c->have_key ? c->key : NULL;
}

/* ---- real functions ------------------------------------------------------ */

typedef int (*save_fn)(xc_interface *, int, uint32_t, uint32_t, struct save_callbacks *, xc_stream_type_t, int);
typedef int (*restore_fn)(xc_interface *, int, uint32_t, unsigned int, unsigned long *, uint32_t, unsigned int,
                          unsigned long *, uint32_t, xc_stream_type_t, struct restore_callbacks *, int);
typedef long long (*logdirty_fn)(xc_interface *, uint32_t, unsigned int, xc_hypercall_buffer_t *, unsigned long,
                                 unsigned int, xc_shadow_op_stats_t *);

static void *real_sym(const char *name)
{
    void *p = dlvsym(RTLD_NEXT, name, XC_VERSION);
    if (!p)
        p = dlsym(RTLD_NEXT, name);
    if (!p)
        fprintf(stderr, "migstream-xen: cannot find the real %s@%s: %s\n", name, XC_VERSION, dlerror());
    return p;
}

static void block_sigpipe(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int write_all(int fd, const void *p, size_t n)
{
    int fdc = fd;
    return ms_xc_out_fd(&fdc, p, n);
}

static int read_all(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (uint8_t *)p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ms_error(MS_ERR_IO, "read from libxl's fd: %s", strerror(errno));
        if (r == 0)
            return ms_error(MS_ERR_CLOSED, "libxl's fd ended after %zu of %zu bytes", got, n);
        got += (size_t)r;
    }
    return MS_OK;
}

/* ======================= sending side ==================================== */

typedef struct save_session {
    xcfg cfg;
    ms_sender *sender;
    int pipe_r, pipe_w, efd, record_fd;
    pthread_t pump;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t barriers_asked, barriers_done;
    bool pump_exited, writer_closed;
    ms_xc_to_sender ts;
    ms_errbuf err;
    int rc;
    /* MIGSTREAM_SCHED=fragmented: the scheduler sits between libxc's
     * log-dirty bitmaps and its precopy loop. */
    ms_sched *sched;
    uint32_t sched_round;     /* round the scheduler planned last */
    int next_answer;          /* what the policy says after the next plan */
    uint64_t round_pages;     /* pages libxc was told to send this round */
    uint64_t sched_npages;
    uint64_t t_start, t_round, t_bitmap;
    bool sched_failed;
} save_session;

static _Atomic(save_session *) active_save;

/* libxc is blocked in xc_logdirty_control, so every byte of the round is
 * in the pipe: the pump ends the round once it has read them all. */
static void round_barrier(save_session *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t want = ++s->barriers_asked;
    uint64_t one = 1;
    if (write(s->efd, &one, sizeof(one)) != sizeof(one))
        s->barriers_done = want; /* cannot wake the pump: skip the barrier */
    while (s->barriers_done < want && !s->pump_exited)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

static int pipe_pending(int fd)
{
    int n = 0;
    return ioctl(fd, FIONREAD, &n) < 0 ? 0 : n;
}

/* Make libxc's next write fail (EBADF) so it takes its error path, as
 * libxl-save-helper does on SIGTERM. */
static void stop_libxc_writes(save_session *s)
{
    pthread_mutex_lock(&s->lock);
    if (!s->writer_closed) {
        int bad = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (bad >= 0) {
            dup2(bad, s->pipe_w);
            close(bad);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static int pump_step(save_session *s, ms_xc_reader *r, uint8_t *buf, size_t cap, bool *eof)
{
    size_t want = ms_xc_reader_want(r);
    ssize_t got = read(s->pipe_r, buf, want < cap ? want : cap);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return MS_OK;
    if (got < 0)
        return ms_error(MS_ERR_IO, "reading libxc's stream: %s", strerror(errno));
    if (got == 0) {
        *eof = true;
        return ms_xc_reader_finish(r);
    }
    if (s->record_fd >= 0 && write_all(s->record_fd, buf, (size_t)got))
        return ms_error_wrap(MS_ERR_IO, "MIGSTREAM_RECORD");
    return ms_xc_reader_push(r, buf, (size_t)got, NULL);
}

static int pump_barrier(save_session *s)
{
    uint64_t n;
    if (read(s->efd, &n, sizeof(n)) != sizeof(n))
        return MS_OK;
    int rc = ms_sender_round_end(s->sender, s->ts.round);
    s->ts.round++;
    pthread_mutex_lock(&s->lock);
    s->barriers_done = s->barriers_asked;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static void *save_pump(void *arg)
{
    save_session *s = arg;
    enum { CAP = 1 << 20 };
    uint8_t *buf = malloc(CAP);
    ms_xc_reader *r = NULL;
    bool eof = false;
    int rc = buf ? ms_xc_reader_new(&ms_xc_reader_to_sender_cb, &s->ts, 0, &r)
                 : ms_error(MS_ERR_NOMEM, "no pump buffer");
    block_sigpipe();
    while (!rc && !ms_xc_reader_done(r)) {
        struct pollfd pf[2] = {{s->pipe_r, POLLIN, 0}, {s->efd, POLLIN, 0}};
        if (poll(pf, 2, -1) < 0 && errno != EINTR) {
            rc = ms_error(MS_ERR_IO, "poll: %s", strerror(errno));
            break;
        }
        if ((pf[1].revents & POLLIN) && pipe_pending(s->pipe_r) == 0)
            rc = pump_barrier(s);
        else if (pf[0].revents & (POLLIN | POLLHUP))
            rc = pump_step(s, r, buf, CAP, &eof);
    }
    /* Everything goes out before xc_domain_save returns: libxl writes its
     * own records on the same fd right after. */
    if (!rc)
        rc = ms_sender_round_end(s->sender, s->ts.round);
    if (!rc)
        rc = ms_sender_finish(s->sender);
    if (rc) {
        pthread_mutex_lock(&s->lock);
        ms_errbuf_capture(&s->err);
        pthread_mutex_unlock(&s->lock);
        ms_sender_abort(s->sender, ms_last_error());
        stop_libxc_writes(s);
        while (!eof && read(s->pipe_r, buf, CAP) > 0)
            ; /* let a blocked libxc write return */
    }
    ms_xc_reader_free(r);
    free(buf);
    pthread_mutex_lock(&s->lock);
    s->rc = rc;
    s->pump_exited = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int open_conns(save_session *s, int io_fd, ms_conn **conns, ms_session_config *sc)
{
    if (s->cfg.transport == T_INBAND) {
        sc->oneway = true; /* libxl's fd runs one way */
        return ms_fd_conn_new(-1, io_fd, false, &conns[0]);
    }
    uint8_t token[TOKEN_SIZE] = {0};
    memcpy(token, TOKEN_MAGIC, 8);
    if (getentropy(sc->session_id, MS_SESSION_ID_SIZE))
        return ms_error(MS_ERR_IO, "getentropy: %s", strerror(errno));
    memcpy(token + 8, sc->session_id, MS_SESSION_ID_SIZE);
    ms_put_le16(token + 24, (uint16_t)s->cfg.channels);
    token[TOKEN_TRANSPORT_OFF] = s->cfg.transport == T_RDMA;
    int rc = write_all(io_fd, token, sizeof(token));
    if (rc)
        return ms_error_wrap(rc, "writing the session token on libxl's fd");
#if MS_HAVE_RDMA
    if (s->cfg.transport == T_RDMA) {
        ms_rdma_options o;
        if (!(rc = rdma_options(&s->cfg, &o)))
            rc = ms_rdma_connect_n(s->cfg.peer, s->cfg.channels, &o, conns);
        return rc ? ms_error_wrap(rc, "connecting to MIGSTREAM_PEER=%s over rdma", s->cfg.peer) : MS_OK;
    }
#endif
    char host[256], port[32];
    if ((rc = ms_split_hostport(s->cfg.peer, host, sizeof(host), port, sizeof(port))))
        return ms_error_wrap(rc, "MIGSTREAM_PEER=%s", s->cfg.peer);
    ms_tcp_options opt = {.timeout_ms = s->cfg.timeout_ms, .connect_retries = 20};
    for (unsigned i = 0; i < s->cfg.channels; i++)
        if ((rc = ms_tcp_connect(host, port, &opt, &conns[i]))) {
            while (i > 0)
                ms_conn_close(conns[--i]);
            return ms_error_wrap(rc, "connecting to MIGSTREAM_PEER=%s", s->cfg.peer);
        }
    return MS_OK;
}

static int save_start(save_session *s, int io_fd)
{
    ms_conn *conns[64] = {0};
    ms_session_config sc;
    fill_session(&s->cfg, &sc);
    int rc = open_conns(s, io_fd, conns, &sc);
    if (!rc)
        rc = ms_sender_open(&sc, conns, s->cfg.channels, &s->sender);
    if (rc)
        return rc;
    s->ts.sender = s->sender;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return ms_error(MS_ERR_IO, "pipe: %s", strerror(errno));
    s->pipe_r = p[0];
    s->pipe_w = p[1];
    fcntl(s->pipe_w, F_SETPIPE_SZ, 1 << 20);
    if ((s->efd = eventfd(0, EFD_CLOEXEC)) < 0)
        return ms_error(MS_ERR_IO, "eventfd: %s", strerror(errno));
    if (s->cfg.record && (s->record_fd = open(s->cfg.record, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
        return ms_error(MS_ERR_IO, "MIGSTREAM_RECORD=%s: %s", s->cfg.record, strerror(errno));
    if ((errno = pthread_create(&s->pump, NULL, save_pump, s)))
        return ms_error(MS_ERR_IO, "pump thread: %s", strerror(errno));
    return MS_OK;
}

static void save_free(save_session *s)
{
    ms_sched_free(s->sched);
    ms_sender_free(s->sender);
    if (s->pipe_r >= 0)
        close(s->pipe_r);
    if (s->efd >= 0)
        close(s->efd);
    if (s->record_fd >= 0)
        close(s->record_fd);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

/* ---- fragmented schedule inside libxc --------------------------------------
 *
 * libxc's loop (xg_sr_save.c send_memory_live) asks precopy_policy before
 * each pass (dirty_count known) and after it (dirty_count -1), and reads
 * the next bitmap with xc_logdirty_control in between. The scheduler plans
 * each round on that bitmap: pages of deferred fragments are taken out
 * (held pending), pages of fragments no longer deferred are put back, and
 * the FINAL bitmap gets every page still pending - none is dropped. */

static double secs(uint64_t from) { return (double)(ms_now_ns() - from) / 1e9; }

static void sched_fail(save_session *s, const char *what)
{
    ms_log(MS_LOG_ERROR, "migstream-xen: fragmented schedule: %s: %s", what, ms_last_error());
    s->sched_failed = true;
}

static int frag_policy(struct precopy_stats st, void *data)
{
    (void)data; /* the caller's; our state is the active session */
    save_session *s = atomic_load(&active_save);
    if (!s || s->sched_failed)
        return XGS_POLICY_ABORT;
    if (!s->sched) { /* first call: the full pass over dirty_count = p2m size pages */
        uint64_t npages = st.dirty_count > 0 ? (uint64_t)st.dirty_count : 0;
        uint64_t *all = malloc((npages + 63) / 64 * 8 + 8);
        ms_sched_round out;
        int rc = all ? ms_sched_new("fragmented", &s->cfg.policy, npages, MS_XC_PAGE_SIZE, &s->sched)
                     : ms_error(MS_ERR_NOMEM, "no bitmap");
        if (!rc) {
            memset(all, 0xff, (npages + 63) / 64 * 8);
            if (npages % 64)
                all[npages / 64] = (1ull << (npages % 64)) - 1;
            rc = ms_sched_plan(s->sched, 0, all, 0, 0, &out);
        }
        free(all);
        if (rc) {
            sched_fail(s, "start");
            return XGS_POLICY_ABORT;
        }
        s->sched_npages = npages;
        s->t_start = s->t_round = s->t_bitmap = ms_now_ns();
        s->round_pages = npages; /* libxc sends them all whatever was planned */
        return XGS_POLICY_CONTINUE_PRECOPY;
    }
    if (st.dirty_count >= 0) /* before a pass: what the plan decided */
        return s->next_answer;
    /* After a pass: tell the scheduler how the round went. */
    const ms_stats *ss = ms_sender_stats(s->sender);
    ms_round_done d = {.round = s->sched_round, .pages = s->round_pages,
                       .raw_bytes = s->round_pages * MS_XC_PAGE_SIZE, .time_s = secs(s->t_round),
                       .link_rate = ms_sender_link_rate(s->sender)};
    for (size_t i = 0; i < ss->nrounds; i++)
        if (ss->rounds[i].round == s->ts.round)
            d.wire_bytes = ss->rounds[i].wire_bytes;
    int rc = ms_sched_sent(s->sched, &d);
    if (rc < 0) {
        sched_fail(s, "round report");
        return XGS_POLICY_ABORT;
    }
    if (rc == MS_DECIDE_STOP_AFTER) {
        ms_log(MS_LOG_INFO, "migstream-xen: fragmented schedule stops after round %u: %s", s->sched_round,
               ms_sched_reason(s->sched));
        return XGS_POLICY_STOP_AND_COPY;
    }
    return XGS_POLICY_CONTINUE_PRECOPY;
}

static void frag_bitmap(save_session *s, xc_hypercall_buffer_t *hb, unsigned long pages, unsigned int mode,
                        xc_shadow_op_stats_t *stats)
{
    uint64_t *bm = hb ? hb->hbuf : NULL;
    if (!bm || pages != s->sched_npages)
        return;
    if (mode & XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL) {
        uint64_t n = ms_sched_final(s->sched, bm);
        if (stats)
            stats->dirty_count = (uint32_t)n;
        return;
    }
    ms_sched_round out;
    double interval = secs(s->t_bitmap);
    s->t_bitmap = s->t_round = ms_now_ns();
    s->sched_round++;
    if (ms_sched_plan(s->sched, s->sched_round, bm, interval, secs(s->t_start), &out) < 0) {
        sched_fail(s, "plan");
        s->next_answer = XGS_POLICY_ABORT;
        return;
    }
    s->round_pages = out.send_pages;
    if (stats)
        stats->dirty_count = (uint32_t)out.send_pages;
    switch (out.decision) {
    case MS_DECIDE_CONTINUE: s->next_answer = XGS_POLICY_CONTINUE_PRECOPY; break;
    case MS_DECIDE_STOP_AFTER:
    case MS_DECIDE_STOP_NOW: /* the plan already moved this round's pages to pending */
        ms_log(MS_LOG_INFO, "migstream-xen: fragmented schedule stops at round %u (%s): %s", s->sched_round,
               ms_decision_name(out.decision), out.reason);
        s->next_answer = XGS_POLICY_STOP_AND_COPY;
        break;
    default: s->next_answer = XGS_POLICY_ABORT; break;
    }
    ms_log(MS_LOG_DEBUG, "migstream-xen: round %u: %llu dirty, %llu to send, %llu pending, %u fragments deferred",
           s->sched_round, (unsigned long long)out.dirty_pages, (unsigned long long)out.send_pages,
           (unsigned long long)out.pending_pages, out.deferred_fragments);
}

__attribute__((visibility("default"))) int xc_domain_save(xc_interface *xch, int io_fd, uint32_t dom,
                                                          uint32_t flags, struct save_callbacks *callbacks,
                                                          xc_stream_type_t stream_type, int recv_fd)
{
    save_fn real = (save_fn)real_sym("xc_domain_save");
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (!env_active())
        return real(xch, io_fd, dom, flags, callbacks, stream_type, recv_fd);
    if (stream_type != XC_STREAM_PLAIN) {
        ms_log(MS_LOG_INFO, "migstream-xen: checkpointed (Remus/COLO) streams pass through unchanged");
        return real(xch, io_fd, dom, flags, callbacks, stream_type, recv_fd);
    }
    save_session *s = calloc(1, sizeof(*s));
    if (!s) {
        errno = ENOMEM;
        return -1;
    }
    s->pipe_r = s->pipe_w = s->efd = s->record_fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    int rc = parse_cfg(&s->cfg, true);
    if (!rc)
        rc = save_start(s, io_fd);
    if (rc) {
        fprintf(stderr, "migstream-xen: save of domain %u not started: %s\n", dom, ms_last_error());
        if (s->sender)
            ms_sender_abort(s->sender, ms_last_error());
        if (s->pipe_w >= 0)
            close(s->pipe_w);
        save_free(s);
        errno = EIO;
        return -1;
    }
    struct save_callbacks cb;
    if (callbacks)
        cb = *callbacks;
    else
        memset(&cb, 0, sizeof(cb));
    if (s->cfg.fragmented) /* libxl sets none: libxc would use its 50-page / 5-round rule */
        cb.precopy_policy = frag_policy;
    atomic_store(&active_save, s);
    int ret = real(xch, s->pipe_w, dom, flags, &cb, stream_type, recv_fd);
    int saved_errno = errno;
    atomic_store(&active_save, NULL);
    pthread_mutex_lock(&s->lock);
    s->writer_closed = true;
    close(s->pipe_w);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->pump, NULL);
    if (!s->rc && s->sched_failed)
        s->rc = MS_ERR_ABORTED;
    if (s->rc) {
        fprintf(stderr, "migstream-xen: save of domain %u failed: %s\n", dom,
                s->err.msg[0] ? s->err.msg : "the fragmented schedule failed (see above)");
        if (ret == 0) {
            ret = -1;
            saved_errno = EIO;
        }
    } else if (ret == 0 && ms_log_get_level() >= MS_LOG_INFO) {
        ms_stats_print(ms_sender_stats(s->sender), "migstream-xen sender", stderr);
    }
    save_free(s);
    errno = saved_errno;
    return ret;
}

__attribute__((visibility("default"))) long long xc_logdirty_control(xc_interface *xch, uint32_t domid,
                                                                     unsigned int sop,
                                                                     xc_hypercall_buffer_t *dirty_bitmap,
                                                                     unsigned long pages, unsigned int mode,
                                                                     xc_shadow_op_stats_t *stats)
{
    static logdirty_fn real;
    if (!real && !(real = (logdirty_fn)real_sym("xc_logdirty_control"))) {
        errno = ENOSYS;
        return -1;
    }
    save_session *s = atomic_load(&active_save);
    if (s && sop == XEN_DOMCTL_SHADOW_OP_CLEAN)
        round_barrier(s);
    long long r = real(xch, domid, sop, dirty_bitmap, pages, mode, stats);
    if (s && s->sched && sop == XEN_DOMCTL_SHADOW_OP_CLEAN && r == (long long)pages)
        frag_bitmap(s, dirty_bitmap, pages, mode, stats);
    return r;
}

/* ======================= receiving side ================================== */

typedef struct restore_session {
    xcfg cfg;
    int io_fd, pipe_r, pipe_w;
    pthread_t pump;
    ms_errbuf err;
    int rc;
    ms_stats stats;
} restore_session;

/* A read-only connection that first returns bytes already read (the 8
 * bytes read to tell a migstream session from a plain libxc stream). */
typedef struct prefixed {
    ms_conn *inner;
    uint8_t head[8];
    size_t len, pos;
} prefixed;

static int px_recv(ms_conn *c, void *buf, size_t len, size_t *got)
{
    prefixed *p = c->priv;
    size_t k = p->len - p->pos < len ? p->len - p->pos : len, g = 0;
    memcpy(buf, p->head + p->pos, k);
    p->pos += k;
    c->bytes_recv += k;
    if (got)
        *got = k;
    if (k == len)
        return MS_OK;
    p->inner->timeout_ms = c->timeout_ms;
    int rc = ms_conn_recv(p->inner, (uint8_t *)buf + k, len - k, &g);
    c->bytes_recv += g;
    if (got)
        *got = k + g;
    return rc;
}

static int px_sendv(ms_conn *c, const struct iovec *iov, int n)
{
    (void)iov;
    (void)n;
    return ms_error(MS_ERR_INVAL, "%s: libxl's fd is read-only here", c->peer);
}

static int px_shutdown(ms_conn *c)
{
    (void)c;
    return MS_OK;
}

static void px_close(ms_conn *c)
{
    prefixed *p = c->priv;
    ms_conn_close(p->inner);
    free(p);
    free(c);
}

static const ms_conn_ops px_ops = {"fd", px_sendv, px_recv, px_shutdown, px_close};

static int prefixed_conn(int fd, const uint8_t head[8], ms_conn **out)
{
    ms_conn *c = calloc(1, sizeof(*c));
    prefixed *p = calloc(1, sizeof(*p));
    int rc = c && p ? ms_fd_conn_new(fd, -1, false, &p->inner) : MS_ERR_NOMEM;
    if (rc) {
        free(c);
        free(p);
        return rc == MS_ERR_NOMEM ? ms_error(rc, "out of memory") : rc;
    }
    memcpy(p->head, head, 8);
    p->len = 8;
    c->ops = &px_ops;
    c->priv = p;
    c->timeout_ms = MS_DEFAULT_TIMEOUT_MS;
    snprintf(c->peer, sizeof(c->peer), "libxl fd %d", fd);
    *out = c;
    return MS_OK;
}

static int run_inband(restore_session *s, ms_xc_writer *w, const uint8_t head[8])
{
    ms_conn *c = NULL;
    ms_session_config sc;
    ms_hello peer, mine = {.version = MS_WIRE_VERSION, .role = MS_ROLE_RECEIVER};
    ms_session_keys keys;
    fill_session(&s->cfg, &sc);
    int rc = prefixed_conn(s->io_fd, head, &c);
    if (!rc)
        rc = ms_handshake_server_read(c, &peer);
    if (!rc)
        rc = ms_handshake_server_finish(c, &peer, &mine, sc.key, &keys);
    if (!rc)
        rc = ms_receiver_run(&sc, &peer, &c, &keys, 1, &ms_xc_writer_sink_ops, w, &s->stats);
    ms_conn_close(c);
    return rc;
}

/* Listen on MIGSTREAM_LISTEN with the transport the sender's token names. */
static int side_listen(const restore_session *s, bool rdma, ms_listener **l)
{
    int rc;
    if (rdma) {
#if MS_HAVE_RDMA
        ms_rdma_options o;
        if ((rc = rdma_options(&s->cfg, &o)) || (rc = ms_rdma_available()))
            return ms_error_wrap(rc, "the sender uses rdma side connections");
        rc = ms_rdma_listen_str(s->cfg.listen, &o, l);
        return rc ? ms_error_wrap(rc, "MIGSTREAM_LISTEN=%s (rdma)", s->cfg.listen) : MS_OK;
#else
        return ms_error(MS_ERR_UNSUPPORTED, "the sender uses rdma side connections, but %s", NO_RDMA_BUILD_MSG);
#endif
    }
    char host[256], port[32];
    if ((rc = ms_split_hostport(s->cfg.listen, host, sizeof(host), port, sizeof(port))))
        return ms_error_wrap(rc, "MIGSTREAM_LISTEN=%s", s->cfg.listen);
    ms_tcp_options opt = {.timeout_ms = s->cfg.timeout_ms};
    rc = ms_tcp_listen(host, port, &opt, l);
    return rc ? ms_error_wrap(rc, "MIGSTREAM_LISTEN=%s", s->cfg.listen) : MS_OK;
}

static int run_side(restore_session *s, ms_xc_writer *w)
{
    uint8_t rest[TOKEN_SIZE - 8];
    int rc = read_all(s->io_fd, rest, sizeof(rest));
    if (rc)
        return ms_error_wrap(rc, "session token");
    bool rdma = rest[TOKEN_TRANSPORT_OFF - 8] == 1;
    if (rest[TOKEN_TRANSPORT_OFF - 8] > 1)
        return ms_error(MS_ERR_CORRUPT, "session token: unknown side transport %u", rest[TOKEN_TRANSPORT_OFF - 8]);
    if (!s->cfg.listen[0])
        return ms_error(MS_ERR_INVAL, "the sender uses a %s side connection: set MIGSTREAM_LISTEN=HOST:PORT",
                        rdma ? "rdma" : "tcp");
    ms_listener *l = NULL;
    ms_session_config sc;
    fill_session(&s->cfg, &sc);
    if ((rc = side_listen(s, rdma, &l)))
        return rc;
    if (!l->loopback_only && !s->cfg.have_key) {
        ms_listener_close(l);
        return ms_error(MS_ERR_AUTH, "MIGSTREAM_LISTEN=%s is not loopback-only: set MIGSTREAM_KEY_FILE",
                        s->cfg.listen);
    }
    ms_accepted a = {0};
    rc = ms_accept_session(l, &sc, s->cfg.timeout_ms, &a);
    ms_listener_close(l);
    if (rc)
        return rc;
    if (memcmp(a.hello.session_id, rest, MS_SESSION_ID_SIZE))
        rc = ms_error(MS_ERR_MISMATCH, "the session on MIGSTREAM_LISTEN is not the one announced on libxl's fd");
    if (!rc)
        rc = ms_receiver_run(&sc, &a.hello, a.conns, a.keys, a.nconns, &ms_xc_writer_sink_ops, w, &s->stats);
    ms_accepted_free(&a);
    return rc;
}

/* A plain libxc stream (the sender had no preload): pass it through,
 * reading exactly up to libxc END. */
static int run_plain(restore_session *s, ms_xc_writer *w, const uint8_t head[8])
{
    ms_xc_reader *r = NULL;
    int rc = ms_xc_reader_new(&ms_xc_reader_to_writer_cb, w, 0, &r);
    if (!rc)
        rc = ms_xc_reader_push(r, head, 8, NULL);
    if (!rc)
        rc = ms_xc_reader_pump_fd(r, s->io_fd);
    ms_xc_reader_free(r);
    return rc;
}

static void *restore_pump(void *arg)
{
    restore_session *s = arg;
    ms_xc_writer *w = NULL;
    uint8_t head[8];
    block_sigpipe();
    int rc = ms_xc_writer_new(ms_xc_out_fd, &s->pipe_w, &w);
    if (!rc)
        rc = read_all(s->io_fd, head, sizeof(head));
    if (!rc) {
        static const uint8_t marker[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        if (!memcmp(head, MS_HELLO_MAGIC, 8))
            rc = run_inband(s, w, head);
        else if (!memcmp(head, TOKEN_MAGIC, 8))
            rc = run_side(s, w);
        else if (!memcmp(head, marker, 8)) {
            ms_log(MS_LOG_INFO, "migstream-xen: the sender sent a plain libxc stream; passing it through");
            rc = run_plain(s, w, head);
        } else
            rc = ms_error(MS_ERR_CORRUPT, "libxl's fd starts with neither a migstream session nor a libxc stream");
    }
    if (!rc && !ms_xc_writer_done(w))
        rc = ms_xc_writer_finish(w);
    if (rc)
        ms_errbuf_capture(&s->err);
    s->rc = rc;
    ms_xc_writer_free(w);
    close(s->pipe_w); /* libxc sees EOF at once if the session failed */
    s->pipe_w = -1;
    return NULL;
}

__attribute__((visibility("default"))) int xc_domain_restore(xc_interface *xch, int io_fd, uint32_t dom,
                                                             unsigned int store_evtchn, unsigned long *store_mfn,
                                                             uint32_t store_domid, unsigned int console_evtchn,
                                                             unsigned long *console_mfn, uint32_t console_domid,
                                                             xc_stream_type_t stream_type,
                                                             struct restore_callbacks *callbacks, int send_back_fd)
{
    restore_fn real = (restore_fn)real_sym("xc_domain_restore");
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (!env_active() || stream_type != XC_STREAM_PLAIN)
        return real(xch, io_fd, dom, store_evtchn, store_mfn, store_domid, console_evtchn, console_mfn,
                    console_domid, stream_type, callbacks, send_back_fd);
    restore_session *s = calloc(1, sizeof(*s));
    if (!s) {
        errno = ENOMEM;
        return -1;
    }
    s->io_fd = io_fd;
    int p[2] = {-1, -1};
    int rc = parse_cfg(&s->cfg, false);
    if (!rc && pipe2(p, O_CLOEXEC) < 0)
        rc = ms_error(MS_ERR_IO, "pipe: %s", strerror(errno));
    s->pipe_r = p[0];
    s->pipe_w = p[1];
    if (!rc && (errno = pthread_create(&s->pump, NULL, restore_pump, s)))
        rc = ms_error(MS_ERR_IO, "pump thread: %s", strerror(errno));
    if (rc) {
        fprintf(stderr, "migstream-xen: restore of domain %u not started: %s\n", dom, ms_last_error());
        if (p[0] >= 0) {
            close(p[0]);
            close(p[1]);
        }
        free(s);
        errno = EIO;
        return -1;
    }
    int ret = real(xch, s->pipe_r, dom, store_evtchn, store_mfn, store_domid, console_evtchn, console_mfn,
                   console_domid, stream_type, callbacks, send_back_fd);
    int saved_errno = errno;
    close(s->pipe_r); /* a pump still writing gets EPIPE, not a hang */
    pthread_join(s->pump, NULL);
    if (s->rc) {
        fprintf(stderr, "migstream-xen: restore of domain %u failed: %s\n", dom, s->err.msg);
        if (ret == 0) {
            ret = -1;
            saved_errno = EIO;
        }
    } else if (ret == 0 && ms_log_get_level() >= MS_LOG_INFO) {
        ms_stats_print(&s->stats, "migstream-xen receiver", stderr);
    }
    ms_stats_free(&s->stats);
    free(s);
    errno = saved_errno;
    return ret;
}
