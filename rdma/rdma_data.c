/* rdma transport: queue pair resources and the data path (RDMA WRITE WITH
 * IMMEDIATE into the peer's ring, credits back, deadlines on every wait). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rdma/rdma_priv.h"

/* How long a flushed completion may wait for the cm event that explains it
 * (a disconnect usually arrives just after) before it is the error itself. */
#define RD_FLUSH_GRACE_NS 500000000ull

/* ---- setup and teardown ------------------------------------------------ */

rd_conn *rd_conn_alloc(const ms_rdma_options *opt)
{
    rd_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->regs = calloc(opt->reg_cache_entries ? opt->reg_cache_entries : 1, sizeof(rd_reg));
    if (!c->regs) {
        free(c);
        return NULL;
    }
    c->nregs = opt->reg_cache_entries;
    c->opt = *opt;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->base.ops = &rd_conn_ops;
    c->base.priv = c;
    c->base.timeout_ms = opt->timeout_ms;
    c->slots = opt->ring_slots;
    c->slot_size = opt->slot_size;
    c->st.slots = c->slots;
    c->st.slot_size = c->slot_size;
    return c;
}

static void *alloc_pages(size_t n)
{
    void *p = NULL;
    long pg = sysconf(_SC_PAGESIZE);
    if (posix_memalign(&p, pg > 0 ? (size_t)pg : 4096u, n))
        return NULL;
    return p;
}

static int post_recvs(rd_conn *c, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        struct ibv_recv_wr wr = {.wr_id = RD_WR_RECV, .sg_list = NULL, .num_sge = 0}, *bad;
        int e = ibv_post_recv(c->id->qp, &wr, &bad);
        if (e)
            return rd_fail(c, MS_ERR_IO, "ibv_post_recv: %s", strerror(e));
    }
    return MS_OK;
}

int rd_setup_verbs(rd_conn *c)
{
    struct ibv_context *ctx = c->id->verbs;
    if (!ctx)
        return ms_error(MS_ERR_UNSUPPORTED, "rdma %s: the address has no RDMA device", c->base.peer);
    snprintf(c->st.device, sizeof(c->st.device), "%s", ibv_get_device_name(ctx->device));
    struct ibv_device_attr da;
    int e = ibv_query_device(ctx, &da);
    if (e)
        return ms_error(MS_ERR_IO, "rdma %s: ibv_query_device(%s): %s", c->base.peer, c->st.device, strerror(e));
    c->max_sge = da.max_sge < RD_MAX_SGE ? da.max_sge : RD_MAX_SGE;
    /* The queues hold every write the credits allow plus control writes;
     * the peer's ring size is not known yet on the connecting side. */
    unsigned want = MS_RDMA_MAX_SLOTS + c->slots + 4;
    unsigned cap = (unsigned)da.max_qp_wr < want ? (unsigned)da.max_qp_wr : want;
    if ((int)(2 * cap) > da.max_cqe)
        cap = (unsigned)da.max_cqe / 2;
    if (cap < 2 * c->slots + 4)
        return ms_error(MS_ERR_LIMIT, "rdma %s: %s allows %u work requests per queue, %u slots need %u",
                        c->base.peer, c->st.device, cap, c->slots, 2 * c->slots + 4);
    c->pd = ibv_alloc_pd(ctx);
    if (!c->pd)
        return ms_error(MS_ERR_IO, "rdma %s: ibv_alloc_pd: %s", c->base.peer, strerror(errno));
    c->cch = ibv_create_comp_channel(ctx);
    if (!c->cch)
        return ms_error(MS_ERR_IO, "rdma %s: ibv_create_comp_channel: %s", c->base.peer, strerror(errno));
    int fl = fcntl(c->cch->fd, F_GETFL);
    if (fl < 0 || fcntl(c->cch->fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return ms_error(MS_ERR_IO, "rdma %s: fcntl: %s", c->base.peer, strerror(errno));
    c->cq = ibv_create_cq(ctx, (int)(2 * cap), c, c->cch, 0);
    if (!c->cq)
        return ms_error(MS_ERR_IO, "rdma %s: ibv_create_cq(%u): %s", c->base.peer, 2 * cap, strerror(errno));
    if ((e = ibv_req_notify_cq(c->cq, 0)))
        return ms_error(MS_ERR_IO, "rdma %s: ibv_req_notify_cq: %s", c->base.peer, strerror(e));
    struct ibv_qp_init_attr qa = {
        .send_cq = c->cq,
        .recv_cq = c->cq,
        .qp_type = IBV_QPT_RC,
        .cap = {.max_send_wr = cap, .max_recv_wr = cap, .max_send_sge = (uint32_t)c->max_sge,
                .max_recv_sge = 1},
    };
    if (rdma_create_qp(c->id, c->pd, &qa))
        return ms_error(MS_ERR_IO, "rdma %s: rdma_create_qp: %s", c->base.peer, strerror(errno));
    c->sq_cap = qa.cap.max_send_wr < cap ? qa.cap.max_send_wr : cap;
    c->rq_cap = qa.cap.max_recv_wr < cap ? qa.cap.max_recv_wr : cap;
    size_t ring_bytes = (size_t)c->slots * c->slot_size;
    c->ring = alloc_pages(ring_bytes);
    c->slot_len = calloc(c->slots, sizeof(*c->slot_len));
    if (!c->ring || !c->slot_len)
        return ms_error(MS_ERR_NOMEM, "rdma %s: cannot allocate a %zu-byte ring", c->base.peer, ring_bytes);
    c->ring_mr = ibv_reg_mr(c->pd, c->ring, ring_bytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    if (!c->ring_mr)
        return ms_error(MS_ERR_IO, "rdma %s: ibv_reg_mr(ring, %zu bytes): %s", c->base.peer, ring_bytes,
                        strerror(errno));
    c->st.zcopy = c->opt.zcopy_min != SIZE_MAX && rd_reg_usable();
    /* Receives for our data and the FIN now; those for the peer's credit
     * writes once its ring size is known. */
    return post_recvs(c, c->slots + 2);
}

int rd_setup_peer(rd_conn *c, const rd_info *peer)
{
    if (peer->slots + c->slots + 4 > c->sq_cap || peer->slots + c->slots + 2 > c->rq_cap)
        return ms_error(MS_ERR_LIMIT, "rdma %s: rings of %u + %u slots exceed the %u work requests of %s",
                        c->base.peer, peer->slots, c->slots, c->sq_cap, c->st.device);
    c->peer_ring = peer->ring_addr;
    c->peer_rkey = peer->rkey;
    c->peer_slots = peer->slots;
    c->peer_slot_size = peer->slot_size;
    c->tx_limit = peer->slots;
    c->st.peer_slots = peer->slots;
    c->st.peer_slot_size = peer->slot_size;
    size_t bytes = (size_t)peer->slots * peer->slot_size;
    c->stage = alloc_pages(bytes);
    if (!c->stage)
        return ms_error(MS_ERR_NOMEM, "rdma %s: cannot allocate a %zu-byte staging ring", c->base.peer, bytes);
    c->stage_mr = ibv_reg_mr(c->pd, c->stage, bytes, 0);
    if (!c->stage_mr)
        return ms_error(MS_ERR_IO, "rdma %s: ibv_reg_mr(staging, %zu bytes): %s", c->base.peer, bytes,
                        strerror(errno));
    int rc = post_recvs(c, peer->slots);
    return rc < 0 ? ms_error(rc, "%s", c->fail_msg) : MS_OK;
}

void rd_local_info(const rd_conn *c, rd_info *out)
{
    memset(out, 0, sizeof(*out));
    out->magic = RD_MAGIC;
    out->version = RD_PROTO_VERSION;
    out->ring_addr = (uint64_t)(uintptr_t)c->ring;
    out->rkey = c->ring_mr ? c->ring_mr->rkey : 0;
    out->slots = c->slots;
    out->slot_size = c->slot_size;
}

/* Release every verbs object (the device may be going away); the memory
 * of the rings stays until the connection is freed. */
static void teardown_verbs(rd_conn *c)
{
    if (c->torn_down)
        return;
    c->torn_down = true;
    if (c->id && c->id->qp)
        rdma_destroy_qp(c->id);
    rd_reg_clear(c);
    if (c->ring_mr)
        ibv_dereg_mr(c->ring_mr);
    if (c->stage_mr)
        ibv_dereg_mr(c->stage_mr);
    c->ring_mr = c->stage_mr = NULL;
    if (c->cq) {
        if (c->cq_unacked)
            ibv_ack_cq_events(c->cq, c->cq_unacked);
        ibv_destroy_cq(c->cq);
        c->cq = NULL;
    }
    if (c->cch)
        ibv_destroy_comp_channel(c->cch);
    c->cch = NULL;
    if (c->pd)
        ibv_dealloc_pd(c->pd);
    c->pd = NULL;
    if (c->id)
        rdma_destroy_id(c->id);
    c->id = NULL;
}

void rd_conn_destroy(rd_conn *c)
{
    if (!c)
        return;
    teardown_verbs(c);
    if (c->ech)
        rdma_destroy_event_channel(c->ech);
    free(c->ring);
    free(c->stage);
    free(c->slot_len);
    free(c->regs);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- failures ---------------------------------------------------------- */

int rd_fail(rd_conn *c, int code, const char *fmt, ...)
{
    if (!c->fail_code) {
        char msg[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(c->fail_msg, sizeof(c->fail_msg), "rdma %s: %s", c->base.peer, msg);
        c->fail_code = code;
        ms_log(MS_LOG_DEBUG, "%s", c->fail_msg);
    }
    return ms_error(c->fail_code, "%s", c->fail_msg);
}

static int raise_failure(rd_conn *c) { return ms_error(c->fail_code, "%s", c->fail_msg); }

/* Why nothing more can be posted. */
static int post_error(rd_conn *c)
{
    if (c->fail_code)
        return raise_failure(c);
    return rd_fail(c, MS_ERR_CLOSED,
                   "peer disconnected (RDMA_CM_EVENT_DISCONNECTED) with %llu of our writes unacknowledged",
                   (unsigned long long)(c->tx_posted - c->tx_acked));
}

void rd_cm_event(rd_conn *c, struct rdma_cm_event *ev)
{
    switch (ev->event) {
    case RDMA_CM_EVENT_DISCONNECTED:
        c->disconnected = true;
        c->connected = false;
        break;
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
        rd_fail(c, MS_ERR_IO, "RDMA device %s was removed (RDMA_CM_EVENT_DEVICE_REMOVAL)", c->st.device);
        c->connected = false;
        break;
    default:
        ms_log(MS_LOG_DEBUG, "rdma %s: %s", c->base.peer, rdma_event_str(ev->event));
        break;
    }
}

/* ---- completions ------------------------------------------------------- */

static const char *wr_name(uint64_t kind)
{
    switch (kind) {
    case RD_WR_DATA: return "RDMA WRITE WITH IMMEDIATE (data)";
    case RD_WR_CTRL: return "RDMA WRITE WITH IMMEDIATE (credit/end)";
    default: return "receive";
    }
}

static void on_immediate(rd_conn *c, uint32_t imm, uint32_t byte_len)
{
    if (imm & RD_IMM_CTRL) {
        if (imm & RD_IMM_FIN) {
            c->fin_seen = true;
            return;
        }
        uint32_t n = imm & RD_IMM_CREDIT_MASK;
        if (c->tx_limit + n > c->tx_posted + c->peer_slots) {
            rd_fail(c, MS_ERR_CORRUPT, "peer returned %u credits, more than the %llu writes it holds", n,
                    (unsigned long long)(c->tx_posted + c->peer_slots - c->tx_limit));
            return;
        }
        c->tx_limit += n;
        c->st.credit_msgs_recv++;
        return;
    }
    uint32_t slot = (imm >> RD_IMM_SLOT_SHIFT) & RD_IMM_SLOT_MASK, len = imm & RD_IMM_LEN_MASK;
    uint32_t expect = (uint32_t)(c->rx_filled % c->slots);
    if (c->fin_seen)
        rd_fail(c, MS_ERR_CORRUPT, "peer wrote data after its end of stream");
    else if (slot != expect)
        rd_fail(c, MS_ERR_CORRUPT, "peer wrote ring slot %u, expected slot %u", slot, expect);
    else if (len == 0 || len > c->slot_size || len != byte_len)
        rd_fail(c, MS_ERR_CORRUPT, "peer wrote %u bytes (immediate says %u) into a %u-byte slot", byte_len,
                len, c->slot_size);
    else if (c->rx_filled - c->rx_consumed >= c->slots)
        rd_fail(c, MS_ERR_CORRUPT, "peer overran the receive ring (%u slots, none free)", c->slots);
    else {
        c->slot_len[slot] = len;
        c->rx_filled++;
    }
}

static const char *status_hint(enum ibv_wc_status st)
{
    switch (st) {
    case IBV_WC_REM_ACCESS_ERR: return ": the peer's ring is gone (did the receiver exit?)";
    case IBV_WC_RETRY_EXC_ERR: return ": the peer stopped acknowledging (host down or link lost?)";
    case IBV_WC_RNR_RETRY_EXC_ERR: return ": the peer has no receives posted";
    default: return "";
    }
}

static void on_completion(rd_conn *c, const struct ibv_wc *wc)
{
    if (wc->status != IBV_WC_SUCCESS) {
        if (wc->status == IBV_WC_WR_FLUSH_ERR) {
            if (!c->flush_ns)
                c->flush_ns = ms_now_ns();
            return;
        }
        rd_fail(c, MS_ERR_IO, "%s failed: %s (wc status %d, vendor error 0x%x)%s", wr_name(wc->wr_id),
                ibv_wc_status_str(wc->status), (int)wc->status, wc->vendor_err, status_hint(wc->status));
        return;
    }
    switch (wc->wr_id) {
    case RD_WR_DATA:
        c->tx_acked++;
        break;
    case RD_WR_CTRL:
        c->ctrl_out--;
        break;
    case RD_WR_RECV:
        if (!c->fail_code && !(wc->wc_flags & IBV_WC_WITH_IMM)) {
            rd_fail(c, MS_ERR_CORRUPT, "peer sent a message without immediate data (opcode %d)", wc->opcode);
            return;
        }
        if (!c->fail_code && post_recvs(c, 1) == MS_OK)
            on_immediate(c, ntohl(wc->imm_data), wc->byte_len);
        break;
    }
}

/* Take every pending cm event and completion (mu held, nobody in poll()). */
static void drain(rd_conn *c)
{
    struct rdma_cm_event *ev;
    while (c->ech && rdma_get_cm_event(c->ech, &ev) == 0) {
        rd_cm_event(c, ev);
        bool removed = ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL;
        rdma_ack_cm_event(ev);
        if (removed)
            teardown_verbs(c); /* the device waits for us to let go of it */
    }
    if (c->torn_down)
        return;
    struct ibv_cq *cq;
    void *ctx;
    while (ibv_get_cq_event(c->cch, &cq, &ctx) == 0)
        c->cq_unacked++;
    if (c->cq_unacked >= 64) {
        ibv_ack_cq_events(c->cq, c->cq_unacked);
        c->cq_unacked = 0;
    }
    /* Arm before polling so a completion after the last poll still wakes us. */
    ibv_req_notify_cq(c->cq, 0);
    struct ibv_wc wc[16];
    int n;
    while ((n = ibv_poll_cq(c->cq, 16, wc)) > 0)
        for (int i = 0; i < n; i++)
            on_completion(c, &wc[i]);
    if (n < 0)
        rd_fail(c, MS_ERR_IO, "ibv_poll_cq failed (%d)", n);
}

/* ---- waiting ----------------------------------------------------------- */

enum rd_want { RD_WANT_SEND, RD_WANT_ACKED, RD_WANT_DATA, RD_WANT_CTRL, RD_WANT_IDLE };

static bool ready(const rd_conn *c, enum rd_want w, uint64_t arg)
{
    switch (w) {
    case RD_WANT_SEND:
        return c->tx_posted < c->tx_limit && c->tx_posted < c->tx_acked + c->peer_slots;
    case RD_WANT_ACKED:
        return c->tx_acked >= arg;
    case RD_WANT_DATA:
        return c->rx_consumed < c->rx_filled || c->fin_seen || c->disconnected;
    case RD_WANT_CTRL:
        return c->ctrl_out < c->slots + 2;
    case RD_WANT_IDLE:
        return c->tx_acked == c->tx_posted && c->ctrl_out == 0;
    }
    return false;
}

static const char *want_name(enum rd_want w)
{
    switch (w) {
    case RD_WANT_SEND: return "free slot in the peer's ring (peer not reading)";
    case RD_WANT_ACKED: return "acknowledgement of our writes";
    case RD_WANT_DATA: return "data";
    case RD_WANT_CTRL: return "room for a control write";
    default: return "completion of our writes";
    }
}

static int post_ctrl(rd_conn *c, uint32_t imm)
{
    struct ibv_send_wr wr = {
        .wr_id = RD_WR_CTRL,
        .opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
        .send_flags = IBV_SEND_SIGNALED,
        .imm_data = htonl(imm),
        .wr.rdma = {.remote_addr = c->peer_ring, .rkey = c->peer_rkey},
    }, *bad;
    int e = ibv_post_send(c->id->qp, &wr, &bad);
    if (e)
        return rd_fail(c, MS_ERR_IO, "ibv_post_send (control): %s", strerror(e));
    c->ctrl_out++;
    return MS_OK;
}

/* Hand consumed slots back; when the control queue is full they stay owed
 * and go with the next attempt. */
static void flush_credits(rd_conn *c)
{
    if (!c->credits_owed || c->torn_down || c->fail_code || c->disconnected || c->ctrl_out >= c->slots + 1)
        return;
    if (post_ctrl(c, RD_IMM_CTRL | c->credits_owed) == MS_OK) {
        c->credits_owed = 0;
        c->st.credit_msgs_sent++;
    }
}

/* Become the thread that waits in poll() on the completion channel and the
 * cm channel; the others wait on the condition variable. */
static void block(rd_conn *c, int wait_ms)
{
    struct pollfd p[2];
    int n = 0;
    if (!c->torn_down)
        p[n++] = (struct pollfd){.fd = c->cch->fd, .events = POLLIN};
    if (c->ech)
        p[n++] = (struct pollfd){.fd = c->ech->fd, .events = POLLIN};
    c->polling = true;
    pthread_mutex_unlock(&c->mu);
    if (poll(p, (nfds_t)n, wait_ms) < 0 && errno != EINTR)
        ms_log(MS_LOG_DEBUG, "rdma: poll: %s", strerror(errno));
    pthread_mutex_lock(&c->mu);
    c->polling = false;
    drain(c);
    pthread_cond_broadcast(&c->cv);
}

static void sleep_cv(rd_conn *c, int wait_ms)
{
    if (wait_ms < 0) {
        pthread_cond_wait(&c->cv, &c->mu);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += wait_ms / 1000;
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

/* Wait (mu held) until `w` holds, the connection fails, or timeout_ms pass
 * without it holding. */
static int wait_for(rd_conn *c, enum rd_want w, uint64_t arg)
{
    uint64_t t0 = ms_now_ns();
    for (;;) {
        if (!c->polling)
            drain(c);
        if (ready(c, w, arg))
            return MS_OK;
        if (c->fail_code)
            return raise_failure(c);
        if (c->disconnected && w != RD_WANT_DATA)
            return post_error(c);
        uint64_t now = ms_now_ns();
        if (c->flush_ns && now - c->flush_ns > RD_FLUSH_GRACE_NS)
            return rd_fail(c, MS_ERR_IO, "work requests were flushed (%s): the queue pair went to the error state",
                           ibv_wc_status_str(IBV_WC_WR_FLUSH_ERR));
        flush_credits(c);
        uint64_t timeout = c->base.timeout_ms;
        int wait_ms = -1;
        if (timeout) {
            uint64_t elapsed = (now - t0) / 1000000ull;
            if (elapsed >= timeout)
                return ms_error(MS_ERR_TIMEOUT, "rdma %s: no %s for %llu ms", c->base.peer, want_name(w),
                                (unsigned long long)timeout);
            uint64_t left = timeout - elapsed;
            wait_ms = left > 1000000 ? 1000000 : (int)left;
        }
        if (c->flush_ns && (wait_ms < 0 || wait_ms > 100))
            wait_ms = 100;
        if (c->polling)
            sleep_cv(c, wait_ms);
        else
            block(c, wait_ms);
    }
}

/* ---- ops --------------------------------------------------------------- */

static bool can_post(rd_conn *c)
{
    return !c->torn_down && !c->fail_code && !c->disconnected;
}


/* Fill one write of up to a peer slot from iov[*vi] + *voff onwards. */
static int build_write(rd_conn *c, const struct iovec *iov, int iovcnt, int *vi, size_t *voff,
                       struct ibv_sge *sge, int *nsge, uint32_t *len, bool *zc)
{
    uint32_t slot = (uint32_t)(c->tx_posted % c->peer_slots);
    uint8_t *stage = c->stage + (size_t)slot * c->peer_slot_size;
    uint32_t staged = 0;
    *nsge = 0;
    *len = 0;
    while (*vi < iovcnt && *len < c->peer_slot_size) {
        const struct iovec *v = &iov[*vi];
        if (*voff == v->iov_len) {
            (*vi)++;
            *voff = 0;
            continue;
        }
        size_t take = v->iov_len - *voff;
        if (take > c->peer_slot_size - *len)
            take = c->peer_slot_size - *len;
        uint8_t *src = (uint8_t *)v->iov_base + *voff;
        struct ibv_mr *mr = NULL;
        if (c->st.zcopy && v->iov_len >= c->opt.zcopy_min)
            mr = rd_reg_get(c, v->iov_base, v->iov_len);
        bool extend = *nsge > 0 && sge[*nsge - 1].lkey == (mr ? mr->lkey : c->stage_mr->lkey) &&
                      sge[*nsge - 1].addr + sge[*nsge - 1].length == (uintptr_t)(mr ? src : stage + staged);
        if (!extend && *nsge == c->max_sge)
            break;
        if (mr) {
            *zc = true;
            c->st.bytes_zcopy += take;
            if (!extend)
                sge[(*nsge)++] = (struct ibv_sge){.addr = (uintptr_t)src, .length = 0, .lkey = mr->lkey};
        } else {
            memcpy(stage + staged, src, take);
            if (!extend)
                sge[(*nsge)++] = (struct ibv_sge){.addr = (uintptr_t)(stage + staged), .length = 0,
                                                  .lkey = c->stage_mr->lkey};
            staged += (uint32_t)take;
            c->st.bytes_copied += take;
        }
        sge[*nsge - 1].length += (uint32_t)take;
        *len += (uint32_t)take;
        *voff += take;
    }
    return MS_OK;
}

static int rd_sendv(ms_conn *mc, const struct iovec *iov, int iovcnt)
{
    rd_conn *c = mc->priv;
    pthread_mutex_lock(&c->mu);
    int rc = MS_OK, vi = 0;
    size_t voff = 0, total = 0;
    uint64_t zc_last = 0;
    bool any_zc = false;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (c->fin_sent) {
        rc = ms_error(MS_ERR_INVAL, "rdma %s: send after shutdown", c->base.peer);
        goto out;
    }
    c->gen++;
    size_t sent = 0;
    while (sent < total) {
        if (!ready(c, RD_WANT_SEND, 0))
            c->st.credit_waits++;
        if ((rc = wait_for(c, RD_WANT_SEND, 0)) < 0)
            break;
        if (!can_post(c)) {
            rc = post_error(c);
            break;
        }
        struct ibv_sge sge[RD_MAX_SGE];
        int nsge;
        uint32_t len;
        bool zc = false;
        build_write(c, iov, iovcnt, &vi, &voff, sge, &nsge, &len, &zc);
        uint32_t slot = (uint32_t)(c->tx_posted % c->peer_slots);
        struct ibv_send_wr wr = {
            .wr_id = RD_WR_DATA,
            .sg_list = sge,
            .num_sge = nsge,
            .opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
            .send_flags = IBV_SEND_SIGNALED,
            .imm_data = htonl((slot << RD_IMM_SLOT_SHIFT) | len),
            .wr.rdma = {.remote_addr = c->peer_ring + (uint64_t)slot * c->peer_slot_size, .rkey = c->peer_rkey},
        }, *bad;
        int e = ibv_post_send(c->id->qp, &wr, &bad);
        if (e) {
            rc = rd_fail(c, MS_ERR_IO, "ibv_post_send (data): %s", strerror(e));
            break;
        }
        if (zc) {
            zc_last = c->tx_posted;
            any_zc = true;
        }
        c->tx_posted++;
        c->st.writes++;
        sent += len;
    }
    /* The caller may reuse its buffer once we return: zero-copy writes
     * must have left it. */
    if (rc == MS_OK && any_zc)
        rc = wait_for(c, RD_WANT_ACKED, zc_last + 1);
    if (rc == MS_OK)
        c->base.bytes_sent += total;
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int end_of_stream(rd_conn *c, size_t done, size_t len)
{
    if (c->fin_seen)
        return ms_error(MS_ERR_CLOSED, "rdma %s: peer ended the stream after %zu of %zu bytes", c->base.peer,
                        done, len);
    if (c->fail_code)
        return raise_failure(c);
    return ms_error(MS_ERR_CLOSED, "rdma %s: peer disconnected (RDMA_CM_EVENT_DISCONNECTED) after %zu of %zu bytes",
                    c->base.peer, done, len);
}

static int rd_recv(ms_conn *mc, void *buf, size_t len, size_t *got)
{
    rd_conn *c = mc->priv;
    pthread_mutex_lock(&c->mu);
    size_t done = 0;
    int rc = MS_OK;
    uint32_t batch = c->slots / 4 ? c->slots / 4 : 1;
    while (done < len) {
        if (c->rx_consumed < c->rx_filled) {
            uint32_t slot = (uint32_t)(c->rx_consumed % c->slots);
            size_t take = c->slot_len[slot] - c->rx_off;
            if (take > len - done)
                take = len - done;
            memcpy((uint8_t *)buf + done, c->ring + (size_t)slot * c->slot_size + c->rx_off, take);
            done += take;
            c->rx_off += take;
            if (c->rx_off == c->slot_len[slot]) {
                c->rx_consumed++;
                c->rx_off = 0;
                if (++c->credits_owed >= batch)
                    flush_credits(c);
            }
            continue;
        }
        if ((rc = wait_for(c, RD_WANT_DATA, 0)) < 0)
            break;
        if (c->rx_consumed == c->rx_filled) {
            rc = end_of_stream(c, done, len);
            break;
        }
    }
    c->base.bytes_recv += done;
    if (got)
        *got = done;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int rd_shutdown_send(ms_conn *mc)
{
    rd_conn *c = mc->priv;
    pthread_mutex_lock(&c->mu);
    int rc = MS_OK;
    if (!c->fin_sent) {
        rc = wait_for(c, RD_WANT_CTRL, 0);
        if (rc == MS_OK && !can_post(c))
            rc = post_error(c);
        if (rc == MS_OK && (rc = post_ctrl(c, RD_IMM_CTRL | RD_IMM_FIN)) == MS_OK)
            c->fin_sent = true;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void rd_close(ms_conn *mc)
{
    rd_conn *c = mc->priv;
    pthread_mutex_lock(&c->mu);
    /* Like a socket's close, let what was posted reach the peer first. */
    if (c->connected && can_post(c))
        wait_for(c, RD_WANT_IDLE, 0);
    if (c->id && c->connected)
        rdma_disconnect(c->id);
    pthread_mutex_unlock(&c->mu);
    rd_conn_destroy(c);
}

const ms_conn_ops rd_conn_ops = {
    .name = "rdma",
    .sendv = rd_sendv,
    .recv = rd_recv,
    .shutdown_send = rd_shutdown_send,
    .close = rd_close,
};

int ms_rdma_conn_stats(const ms_conn *mc, ms_rdma_stats *out)
{
    if (!mc || mc->ops != &rd_conn_ops)
        return ms_error(MS_ERR_INVAL, "not an rdma connection");
    rd_conn *c = mc->priv;
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
    return MS_OK;
}
