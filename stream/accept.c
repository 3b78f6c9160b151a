/* Accepting sessions: connections grouped by session id, each handshake
 * finished as soon as its hello is read, failures dropped and logged while
 * the wait for the legitimate peer goes on. */
#include <stdlib.h>
#include <string.h>

#include "stream/pipeline_priv.h"
#include <sodium.h>

/* A peer that connects and says nothing must not hold up the others for
 * long: its hello gets at most this long. */
#define HELLO_TIMEOUT_MAX_MS 5000u
#define MAX_PENDING_SESSIONS 16u

typedef struct group {
    ms_hello first;          /* hello of the first channel that shook hands */
    ms_hello *hellos;
    ms_conn **conns;
    ms_session_keys *keys;
    unsigned have;
} group;

static void group_free(group *g, const char *why)
{
    if (!g->conns)
        return;
    if (why && g->have)
        ms_log(MS_LOG_ERROR, "migstream: dropping %u of %u channels of an incomplete session: %s", g->have,
               g->first.channels, why);
    for (unsigned i = 0; i < g->first.channels; i++)
        ms_conn_close(g->conns[i]);
    if (g->keys)
        sodium_memzero(g->keys, g->first.channels * sizeof *g->keys);
    free(g->hellos);
    free(g->conns);
    free(g->keys);
    memset(g, 0, sizeof *g);
}

static group *find_group(group *gs, unsigned n, const uint8_t *sid)
{
    for (unsigned i = 0; i < n; i++)
        if (gs[i].conns && !memcmp(gs[i].first.session_id, sid, MS_SESSION_ID_SIZE))
            return &gs[i];
    return NULL;
}

static int group_new(group *gs, unsigned n, const ms_hello *h, group **out)
{
    group *g = NULL;
    for (unsigned i = 0; i < n && !g; i++)
        if (!gs[i].conns)
            g = &gs[i];
    if (!g) /* too many half-open sessions: the oldest goes */
        group_free(g = &gs[0], "too many sessions waiting for their channels");
    g->first = *h;
    g->hellos = calloc(h->channels, sizeof *g->hellos);
    g->conns = calloc(h->channels, sizeof *g->conns);
    g->keys = calloc(h->channels, sizeof *g->keys);
    if (!g->hellos || !g->conns || !g->keys) {
        free(g->hellos);
        free(g->conns);
        free(g->keys);
        memset(g, 0, sizeof *g);
        return ms_error(MS_ERR_NOMEM, "accept: out of memory");
    }
    *out = g;
    return MS_OK;
}

/* Handshake on one accepted connection and file it under its session. On
 * failure the caller closes it. */
static int take_connection(ms_conn *c, const ms_session_config *cfg, group *gs, unsigned ngs, group **done)
{
    uint64_t timeout = ms_effective_timeout(cfg);
    ms_hello peer, mine = {0};
    ms_session_keys keys;
    group *g;
    int rc;

    c->timeout_ms = timeout < HELLO_TIMEOUT_MAX_MS ? timeout : HELLO_TIMEOUT_MAX_MS;
    if ((rc = ms_handshake_server_read(c, &peer)) < 0)
        return rc;
    if (peer.role != MS_ROLE_SENDER)
        return ms_error(MS_ERR_MISMATCH, "%s: the peer is not a sender", c->peer);
    g = find_group(gs, ngs, peer.session_id);
    mine.version = MS_WIRE_VERSION;
    mine.role = MS_ROLE_RECEIVER;
    if (g) {
        /* Later channels must agree with the first; the handshake reports
         * a disagreement to both ends. */
        mine.channels = g->first.channels;
        mine.page_size = g->first.page_size;
        memcpy(mine.chain, g->first.chain, sizeof mine.chain);
        if (peer.channel < g->first.channels && g->conns[peer.channel])
            return ms_error(MS_ERR_MISMATCH, "%s: channel %u of this session is already connected", c->peer,
                            peer.channel);
        if ((peer.flags & MS_HELLO_F_ONEWAY) != (g->first.flags & MS_HELLO_F_ONEWAY))
            return ms_error(MS_ERR_MISMATCH, "%s: channels of one session disagree on one-way mode", c->peer);
    }
    if ((rc = ms_handshake_server_finish(c, &peer, &mine, cfg->key, &keys)) < 0)
        return rc;
    if (!g && (rc = group_new(gs, ngs, &peer, &g)) < 0)
        return rc;
    c->timeout_ms = timeout;
    g->hellos[peer.channel] = peer;
    g->conns[peer.channel] = c;
    g->keys[peer.channel] = keys;
    sodium_memzero(&keys, sizeof keys);
    if (++g->have == g->first.channels)
        *done = g;
    return MS_OK;
}

int ms_accept_session(ms_listener *l, const ms_session_config *cfg, uint64_t timeout_ms, ms_accepted *out)
{
    group gs[MAX_PENDING_SESSIONS];
    group *done = NULL;
    uint64_t deadline = timeout_ms ? ms_now_ns() + timeout_ms * 1000000ull : 0;
    int rc = MS_OK;

    memset(out, 0, sizeof *out);
    memset(gs, 0, sizeof gs);
    if (!l->loopback_only && !cfg->key && !cfg->insecure)
        return ms_error(MS_ERR_INVAL, "listener on %s is reachable from other hosts and has no key: give a key "
                                      "file (migstream keygen FILE), or allow unsealed sessions explicitly "
                                      "(--insecure)", l->addr);
    while (!done) {
        uint64_t left = 0;
        ms_conn *c = NULL;
        if (deadline) {
            uint64_t now = ms_now_ns();
            if (now >= deadline) {
                rc = ms_error(MS_ERR_TIMEOUT, "no complete session on %s within %llu ms", l->addr,
                              (unsigned long long)timeout_ms);
                break;
            }
            left = (deadline - now + 999999) / 1000000;
        }
        if ((rc = ms_listener_accept(l, &c, left)) < 0) {
            if (rc == MS_ERR_TIMEOUT)
                rc = ms_error(MS_ERR_TIMEOUT, "no complete session on %s within %llu ms", l->addr,
                              (unsigned long long)timeout_ms);
            break;
        }
        if (take_connection(c, cfg, gs, MAX_PENDING_SESSIONS, &done) < 0) {
            ms_log(MS_LOG_ERROR, "migstream: dropped connection from %s: %s", c->peer, ms_last_error());
            ms_conn_close(c);
        }
    }
    if (done) {
        out->hello = done->hellos[0];
        out->conns = done->conns;
        out->keys = done->keys;
        out->nconns = done->first.channels;
        free(done->hellos);
        memset(done, 0, sizeof *done);
        rc = MS_OK;
    }
    for (unsigned i = 0; i < MAX_PENDING_SESSIONS; i++)
        group_free(&gs[i], done ? "another session completed first" : "no complete session");
    return rc;
}

void ms_accepted_free(ms_accepted *a)
{
    if (!a)
        return;
    for (unsigned i = 0; a->conns && i < a->nconns; i++)
        ms_conn_close(a->conns[i]);
    if (a->keys)
        sodium_memzero(a->keys, a->nconns * sizeof *a->keys);
    free(a->conns);
    free(a->keys);
    memset(a, 0, sizeof *a);
}

int ms_receive_stream(ms_conn *c, const ms_session_config *cfg, const ms_sink_ops *sink, void *sink_ctx,
                      ms_stats *stats, ms_hello *hello)
{
    ms_hello peer, mine = {.version = MS_WIRE_VERSION, .role = MS_ROLE_RECEIVER, .channels = 1};
    ms_session_keys keys;
    int rc;

    if ((rc = ms_handshake_server_read(c, &peer)) < 0)
        return rc;
    if (hello)
        *hello = peer;
    if (peer.role != MS_ROLE_SENDER)
        return ms_error(MS_ERR_MISMATCH, "%s: the stream was not written by a sender", c->peer);
    if ((rc = ms_handshake_server_finish(c, &peer, &mine, cfg->key, &keys)) < 0)
        return rc;
    rc = ms_receiver_run(cfg, &peer, &c, &keys, 1, sink, sink_ctx, stats);
    sodium_memzero(&keys, sizeof keys);
    return rc;
}
