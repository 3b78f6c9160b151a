/* rdma transport: options, addresses, connection setup over librdmacm
 * (connect, listen, accept) and the private data both sides exchange. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rdma/rdma_priv.h"

/* ---- options ----------------------------------------------------------- */

void rd_fill_options(ms_rdma_options *o, const ms_rdma_options *in)
{
    if (in)
        *o = *in;
    else
        memset(o, 0, sizeof(*o));
    if (!o->timeout_ms)
        o->timeout_ms = MS_DEFAULT_TIMEOUT_MS;
    if (!o->ring_slots)
        o->ring_slots = MS_RDMA_DEFAULT_SLOTS;
    if (!o->slot_size)
        o->slot_size = MS_RDMA_DEFAULT_SLOT_SIZE;
    if (!o->ack_timeout)
        o->ack_timeout = MS_RDMA_DEFAULT_ACK_TIMEOUT;
    if (!o->retry_cnt)
        o->retry_cnt = MS_RDMA_DEFAULT_RETRY_CNT;
    if (!o->zcopy_min)
        o->zcopy_min = MS_RDMA_DEFAULT_ZCOPY_MIN;
    if (!o->reg_cache_entries)
        o->reg_cache_entries = MS_RDMA_DEFAULT_REG_CACHE;
}

int rd_check_options(const ms_rdma_options *o)
{
    if (o->ring_slots < 2 || o->ring_slots > MS_RDMA_MAX_SLOTS)
        return ms_error(MS_ERR_INVAL, "rdma: ring slots %u out of range 2..%u", o->ring_slots,
                        MS_RDMA_MAX_SLOTS);
    if (o->slot_size < MS_RDMA_MIN_SLOT_SIZE || o->slot_size > MS_RDMA_MAX_SLOT_SIZE)
        return ms_error(MS_ERR_INVAL, "rdma: slot size %u out of range %u..%u", o->slot_size,
                        MS_RDMA_MIN_SLOT_SIZE, MS_RDMA_MAX_SLOT_SIZE);
    if (o->ack_timeout > 31)
        return ms_error(MS_ERR_INVAL, "rdma: ACK timeout exponent %u exceeds 31", o->ack_timeout);
    if (o->retry_cnt > 7)
        return ms_error(MS_ERR_INVAL, "rdma: retry count %u exceeds 7", o->retry_cnt);
    if (o->reg_cache_entries > 1024)
        return ms_error(MS_ERR_INVAL, "rdma: registration cache of %u entries exceeds 1024",
                        o->reg_cache_entries);
    return MS_OK;
}

static int parse_uint(const char *key, const char *v, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return ms_error(MS_ERR_INVAL, "rdma option %s=%s: expected an integer %u..%u", key, v, lo, hi);
    *out = (unsigned)x;
    return MS_OK;
}

static int parse_item(const char *key, const char *v, ms_rdma_options *o)
{
    unsigned u = 0;
    uint64_t x;
    int rc = MS_OK;
    if (!strcmp(key, "slots")) {
        if ((rc = parse_uint(key, v, 2, MS_RDMA_MAX_SLOTS, &u)) == MS_OK)
            o->ring_slots = u;
    } else if (!strcmp(key, "slot-size")) {
        if (ms_parse_size(v, &x) < 0 || x < MS_RDMA_MIN_SLOT_SIZE || x > MS_RDMA_MAX_SLOT_SIZE)
            return ms_error(MS_ERR_INVAL, "rdma option slot-size=%s: expected a size 4K..1M", v);
        o->slot_size = (uint32_t)x;
    } else if (!strcmp(key, "ack-timeout")) {
        if ((rc = parse_uint(key, v, 1, 31, &u)) == MS_OK)
            o->ack_timeout = (uint8_t)u;
    } else if (!strcmp(key, "retry")) {
        if ((rc = parse_uint(key, v, 1, 7, &u)) == MS_OK)
            o->retry_cnt = (uint8_t)u;
    } else if (!strcmp(key, "zcopy-min")) {
        if (!strcmp(v, "off"))
            o->zcopy_min = SIZE_MAX;
        else if (ms_parse_size(v, &x) < 0 || x == 0)
            return ms_error(MS_ERR_INVAL, "rdma option zcopy-min=%s: expected a size or 'off'", v);
        else
            o->zcopy_min = (size_t)x;
    } else if (!strcmp(key, "reg-cache")) {
        if ((rc = parse_uint(key, v, 1, 1024, &u)) == MS_OK)
            o->reg_cache_entries = u;
    } else if (!strcmp(key, "timeout")) {
        if (ms_parse_duration_ms(v, &x) < 0)
            return ms_error(MS_ERR_INVAL, "rdma option timeout=%s: expected a duration", v);
        o->timeout_ms = x;
    } else if (!strcmp(key, "connect-retries")) {
        if ((rc = parse_uint(key, v, 0, 10000, &u)) == MS_OK)
            o->connect_retries = u;
    } else {
        return ms_error(MS_ERR_INVAL,
                        "unknown rdma option '%s' (slots, slot-size, ack-timeout, retry, zcopy-min, "
                        "reg-cache, timeout, connect-retries)", key);
    }
    return rc;
}

int ms_rdma_options_parse(const char *spec, ms_rdma_options *o)
{
    char *copy = strdup(spec ? spec : "");
    if (!copy)
        return ms_error(MS_ERR_NOMEM, "rdma options: out of memory");
    int rc = MS_OK;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item && rc == MS_OK; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq || eq == item || !eq[1]) {
            rc = ms_error(MS_ERR_INVAL, "rdma option '%s': expected KEY=VALUE", item);
            break;
        }
        *eq = '\0';
        rc = parse_item(item, eq + 1, o);
    }
    free(copy);
    return rc;
}

/* ---- private data ------------------------------------------------------ */

void rd_info_pack(const rd_info *in, uint8_t out[RD_INFO_SIZE])
{
    ms_put_le32(out, in->magic);
    ms_put_le16(out + 4, in->version);
    ms_put_le16(out + 6, in->flags);
    ms_put_le64(out + 8, in->ring_addr);
    ms_put_le32(out + 16, in->rkey);
    ms_put_le32(out + 20, in->slots);
    ms_put_le32(out + 24, in->slot_size);
}

int rd_info_unpack(const void *p, size_t len, rd_info *out)
{
    const uint8_t *b = p;
    if (!b || len < 6)
        return ms_error(MS_ERR_VERSION, "connection private data of %zu bytes is not migstream rdma's", len);
    out->magic = ms_get_le32(b);
    out->version = ms_get_le16(b + 4);
    if (out->magic != RD_MAGIC)
        return ms_error(MS_ERR_VERSION, "connection private data is not migstream rdma's (magic 0x%08x)",
                        out->magic);
    if (out->version != RD_PROTO_VERSION)
        return ms_error(MS_ERR_VERSION, "peer speaks rdma transport version %u, this build speaks %u",
                        out->version, RD_PROTO_VERSION);
    if (len < RD_INFO_SIZE)
        return ms_error(MS_ERR_VERSION, "rdma private data truncated to %zu bytes", len);
    out->flags = ms_get_le16(b + 6);
    out->ring_addr = ms_get_le64(b + 8);
    out->rkey = ms_get_le32(b + 16);
    out->slots = ms_get_le32(b + 20);
    out->slot_size = ms_get_le32(b + 24);
    if (out->slots < 2 || out->slots > MS_RDMA_MAX_SLOTS || out->slot_size < MS_RDMA_MIN_SLOT_SIZE ||
        out->slot_size > MS_RDMA_MAX_SLOT_SIZE)
        return ms_error(MS_ERR_MISMATCH, "peer's rdma ring of %u slots of %u bytes is out of range",
                        out->slots, out->slot_size);
    return MS_OK;
}

static void reject_pack(uint8_t out[RD_REJECT_SIZE], unsigned reason)
{
    ms_put_le32(out, RD_MAGIC);
    ms_put_le16(out + 4, RD_PROTO_VERSION);
    ms_put_le16(out + 6, (uint16_t)reason);
}

/* ---- addresses --------------------------------------------------------- */

void rd_addr_str(const struct sockaddr *sa, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
        snprintf(out, n, "%s:%u", ip, ntohs(s->sin_port));
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
        snprintf(out, n, "[%s]:%u", ip, ntohs(s->sin6_port));
    } else {
        snprintf(out, n, "?");
    }
}

static bool addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            return a->s6_addr[12] == 127;
        return IN6_IS_ADDR_LOOPBACK(a);
    }
    return false;
}

static int split_hostport(const char *s, char *host, size_t hn, char *port, size_t pn)
{
    const char *colon, *h = s;
    size_t hl;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return ms_error(MS_ERR_INVAL, "'%s': expected [IPV6]:PORT", s);
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return ms_error(MS_ERR_INVAL, "'%s': expected HOST:PORT", s);
        hl = (size_t)(colon - s);
    }
    if (hl >= hn || strlen(colon + 1) >= pn || !colon[1])
        return ms_error(MS_ERR_INVAL, "'%s': expected HOST:PORT", s);
    memcpy(host, h, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    return MS_OK;
}

/* ---- cm events --------------------------------------------------------- */

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return ms_error(MS_ERR_IO, "rdma: fcntl(O_NONBLOCK): %s", strerror(errno));
    return MS_OK;
}

static struct rdma_event_channel *new_channel(void)
{
    struct rdma_event_channel *ch = rdma_create_event_channel();
    if (!ch) {
        ms_error(MS_ERR_IO, "rdma_create_event_channel: %s", strerror(errno));
        return NULL;
    }
    if (set_nonblock(ch->fd) < 0) {
        rdma_destroy_event_channel(ch);
        return NULL;
    }
    return ch;
}

static uint64_t deadline_after(uint64_t ms) { return ms ? ms_now_ns() + ms * 1000000ull : 0; }

/* Next event on ch before deadline (0: none); `what` names the wait. */
static int next_event(struct rdma_event_channel *ch, uint64_t deadline, struct rdma_cm_event **ev,
                      const char *who, const char *what)
{
    for (;;) {
        if (rdma_get_cm_event(ch, ev) == 0)
            return MS_OK;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return ms_error(MS_ERR_IO, "rdma %s: rdma_get_cm_event: %s", who, strerror(errno));
        int wait = -1;
        if (deadline) {
            uint64_t now = ms_now_ns();
            if (now >= deadline)
                return ms_error(MS_ERR_TIMEOUT, "rdma %s: timed out waiting for %s", who, what);
            wait = (int)((deadline - now + 999999) / 1000000);
        }
        struct pollfd p = {.fd = ch->fd, .events = POLLIN};
        if (poll(&p, 1, wait) < 0 && errno != EINTR)
            return ms_error(MS_ERR_IO, "rdma %s: poll: %s", who, strerror(errno));
    }
}

static int cm_timeout_ms(const ms_rdma_options *o)
{
    return o->timeout_ms > 60000 ? 60000 : (int)o->timeout_ms;
}

static void set_ack_timeout(struct rdma_cm_id *id, const ms_rdma_options *o)
{
    uint8_t t = o->ack_timeout;
    /* Older kernels lack the option; the device default then applies. */
    if (rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &t, sizeof(t)))
        ms_log(MS_LOG_DEBUG, "rdma: cannot set ACK timeout %u: %s", t, strerror(errno));
}

static void fill_conn_param(struct rdma_conn_param *p, const rd_conn *c, uint8_t blob[RD_INFO_SIZE])
{
    rd_info mine;
    rd_local_info(c, &mine);
    rd_info_pack(&mine, blob);
    memset(p, 0, sizeof(*p));
    p->private_data = blob;
    p->private_data_len = RD_INFO_SIZE;
    p->retry_count = c->opt.retry_cnt;
    p->rnr_retry_count = 7; /* unlimited: a missing receive only delays a write */
    p->flow_control = 1;
}

/* ---- connect ----------------------------------------------------------- */

/* Describe a REJECTED event; *retry when nobody listens (yet). */
static int rejected(const struct rdma_cm_event *ev, const char *who, bool *retry)
{
    const uint8_t *pd = ev->param.conn.private_data;
    size_t len = ev->param.conn.private_data_len;
    if (pd && len >= RD_REJECT_SIZE && ms_get_le32(pd) == RD_MAGIC) {
        unsigned ver = ms_get_le16(pd + 4), reason = ms_get_le16(pd + 6);
        if (reason == RD_REJ_VERSION)
            return ms_error(MS_ERR_VERSION,
                            "rdma %s: peer rejected the connection: it speaks rdma transport version %u, "
                            "this build speaks %u", who, ver, RD_PROTO_VERSION);
        if (reason == RD_REJ_GEOMETRY)
            return ms_error(MS_ERR_MISMATCH, "rdma %s: peer rejected our ring geometry", who);
        return ms_error(MS_ERR_IO, "rdma %s: peer could not set up the connection (out of resources)", who);
    }
    *retry = true;
    return ms_error(MS_ERR_IO, "rdma %s: connection refused (%s, reject reason %d): is the receiver listening?",
                    who, rdma_event_str(ev->event), ev->status);
}

/* Wait for `want`; an error event ends the wait with its name. */
static int expect_event(rd_conn *c, uint64_t deadline, enum rdma_cm_event_type want, const char *what,
                        bool *retry, rd_info *peer)
{
    struct rdma_cm_event *ev;
    int rc = next_event(c->ech, deadline, &ev, c->base.peer, what);
    if (rc < 0)
        return rc;
    if (ev->event == want) {
        if (peer)
            rc = rd_info_unpack(ev->param.conn.private_data, ev->param.conn.private_data_len, peer);
        if (rc < 0)
            ms_error_wrap(rc, "rdma %s", c->base.peer);
    } else if (ev->event == RDMA_CM_EVENT_REJECTED) {
        rc = rejected(ev, c->base.peer, retry);
    } else {
        /* The peer's host may still be coming up (no neighbour entry yet). */
        if (ev->event == RDMA_CM_EVENT_UNREACHABLE || ev->event == RDMA_CM_EVENT_CONNECT_ERROR ||
            ev->event == RDMA_CM_EVENT_ADDR_ERROR || ev->event == RDMA_CM_EVENT_ROUTE_ERROR)
            *retry = true;
        rc = ms_error(MS_ERR_IO, "rdma %s: %s failed: %s (status %d%s%s)", c->base.peer, what,
                      rdma_event_str(ev->event), ev->status, ev->status < 0 ? ", " : "",
                      ev->status < 0 ? strerror(-ev->status) : "");
    }
    rdma_ack_cm_event(ev);
    return rc;
}

static int connect_once(const struct sockaddr *dst, const ms_rdma_options *o, bool *retry, rd_conn **out)
{
    rd_conn *c = rd_conn_alloc(o);
    if (!c)
        return ms_error(MS_ERR_NOMEM, "rdma: out of memory");
    rd_addr_str(dst, c->base.peer, sizeof(c->base.peer));
    uint64_t deadline = deadline_after(o->timeout_ms);
    uint8_t blob[RD_INFO_SIZE];
    struct rdma_conn_param param;
    rd_info peer;
    int rc;
    c->ech = new_channel();
    if (!c->ech) {
        rc = ms_last_code();
        goto fail;
    }
    if (rdma_create_id(c->ech, &c->id, c, RDMA_PS_TCP)) {
        rc = ms_error(MS_ERR_IO, "rdma_create_id: %s", strerror(errno));
        goto fail;
    }
    if (rdma_resolve_addr(c->id, NULL, (struct sockaddr *)dst, cm_timeout_ms(o))) {
        rc = ms_error(MS_ERR_IO, "rdma %s: rdma_resolve_addr: %s", c->base.peer, strerror(errno));
        goto fail;
    }
    if ((rc = expect_event(c, deadline, RDMA_CM_EVENT_ADDR_RESOLVED, "address resolution", retry, NULL)) < 0)
        goto fail;
    set_ack_timeout(c->id, o);
    if (rdma_resolve_route(c->id, cm_timeout_ms(o))) {
        rc = ms_error(MS_ERR_IO, "rdma %s: rdma_resolve_route: %s", c->base.peer, strerror(errno));
        goto fail;
    }
    if ((rc = expect_event(c, deadline, RDMA_CM_EVENT_ROUTE_RESOLVED, "route resolution", retry, NULL)) < 0)
        goto fail;
    if ((rc = rd_setup_verbs(c)) < 0)
        goto fail;
    fill_conn_param(&param, c, blob);
    if (rdma_connect(c->id, &param)) {
        rc = ms_error(MS_ERR_IO, "rdma %s: rdma_connect: %s", c->base.peer, strerror(errno));
        goto fail;
    }
    if ((rc = expect_event(c, deadline, RDMA_CM_EVENT_ESTABLISHED, "connection", retry, &peer)) < 0)
        goto fail;
    c->connected = true;
    if ((rc = rd_setup_peer(c, &peer)) < 0)
        goto fail;
    *out = c;
    return MS_OK;
fail:
    rd_conn_destroy(c);
    return rc;
}

int ms_rdma_connect(const char *host, const char *port, const ms_rdma_options *opt, ms_conn **out)
{
    ms_rdma_options o;
    rd_fill_options(&o, opt);
    int rc = rd_check_options(&o);
    if (rc < 0)
        return rc;
    struct rdma_addrinfo hints = {.ai_port_space = RDMA_PS_TCP}, *res = NULL;
    if (rdma_getaddrinfo(host, port, &hints, &res) || !res || !res->ai_dst_addr) {
        rc = ms_error(MS_ERR_IO, "rdma: cannot resolve %s port %s: %s", host, port,
                      errno ? strerror(errno) : "no address");
        if (res)
            rdma_freeaddrinfo(res);
        return rc;
    }
    rd_conn *c = NULL;
    for (unsigned attempt = 0;; attempt++) {
        bool retry = false;
        rc = connect_once(res->ai_dst_addr, &o, &retry, &c);
        if (rc == MS_OK || !retry || attempt >= o.connect_retries)
            break;
        ms_log(MS_LOG_DEBUG, "%s; retrying", ms_last_error());
        usleep(200000);
    }
    rdma_freeaddrinfo(res);
    if (rc < 0)
        return rc;
    ms_log(MS_LOG_DEBUG, "rdma: connected to %s on %s", c->base.peer, c->st.device);
    *out = &c->base;
    return MS_OK;
}

/* ---- listen / accept --------------------------------------------------- */

/* A listener accepts connection requests on its own thread, as a kernel
 * completes TCP handshakes into the backlog: rdma_cm needs the passive side
 * to call rdma_accept, and a sender opens all its channels before it says
 * hello on any, so accepting only inside ms_listener_accept would stall it. */
#define RD_BACKLOG 64u

typedef struct rd_listener {
    ms_listener base;
    ms_rdma_options opt;
    struct rdma_event_channel *ech;
    struct rdma_cm_id *id;
    pthread_t th;
    bool th_started;
    int wake[2];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rd_conn *queue[RD_BACKLOG];
    unsigned qhead, qlen;
    int fail_code;
    char fail_msg[256];
} rd_listener;

static void reject_request(struct rdma_cm_id *id, unsigned reason)
{
    uint8_t blob[RD_REJECT_SIZE];
    reject_pack(blob, reason);
    rdma_reject(id, blob, sizeof(blob));
    rdma_destroy_id(id);
}

/* Set up a connection for one request; ev is acked here. */
static int accept_one(rd_listener *l, struct rdma_cm_event *ev, uint64_t deadline, rd_conn **out)
{
    struct rdma_cm_id *id = ev->id;
    char who[96];
    rd_addr_str(rdma_get_peer_addr(id), who, sizeof(who));
    rd_info peer;
    int rc = rd_info_unpack(ev->param.conn.private_data, ev->param.conn.private_data_len, &peer);
    rdma_ack_cm_event(ev);
    if (rc < 0) {
        reject_request(id, rc == MS_ERR_VERSION ? RD_REJ_VERSION : RD_REJ_GEOMETRY);
        return ms_error_wrap(rc, "rdma %s", who);
    }
    rd_conn *c = rd_conn_alloc(&l->opt);
    if (!c) {
        reject_request(id, RD_REJ_RESOURCES);
        return ms_error(MS_ERR_NOMEM, "rdma: out of memory");
    }
    snprintf(c->base.peer, sizeof(c->base.peer), "%s", who);
    c->id = id;
    id->context = c;
    uint8_t blob[RD_INFO_SIZE];
    struct rdma_conn_param param;
    c->ech = new_channel();
    if (!c->ech) {
        rc = ms_last_code();
        goto reject;
    }
    if (rdma_migrate_id(id, c->ech)) {
        rc = ms_error(MS_ERR_IO, "rdma %s: rdma_migrate_id: %s", who, strerror(errno));
        goto reject;
    }
    set_ack_timeout(id, &l->opt);
    if ((rc = rd_setup_verbs(c)) < 0 || (rc = rd_setup_peer(c, &peer)) < 0)
        goto reject;
    fill_conn_param(&param, c, blob);
    if (rdma_accept(id, &param)) {
        rc = ms_error(MS_ERR_IO, "rdma %s: rdma_accept: %s", who, strerror(errno));
        goto fail;
    }
    bool retry = false;
    if ((rc = expect_event(c, deadline, RDMA_CM_EVENT_ESTABLISHED, "connection", &retry, NULL)) < 0)
        goto fail;
    c->connected = true;
    *out = c;
    return MS_OK;
reject:
    {
        uint8_t rb[RD_REJECT_SIZE];
        reject_pack(rb, RD_REJ_RESOURCES);
        rdma_reject(id, rb, sizeof(rb));
    }
fail:
    rd_conn_destroy(c);
    return rc;
}

static void listener_failed(rd_listener *l, int code, const char *msg)
{
    pthread_mutex_lock(&l->mu);
    if (!l->fail_code) {
        l->fail_code = code;
        snprintf(l->fail_msg, sizeof(l->fail_msg), "%s", msg);
    }
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static void handle_request(rd_listener *l, struct rdma_cm_event *ev)
{
    pthread_mutex_lock(&l->mu);
    bool full = l->qlen == RD_BACKLOG;
    pthread_mutex_unlock(&l->mu);
    if (full) {
        struct rdma_cm_id *id = ev->id;
        rdma_ack_cm_event(ev);
        reject_request(id, RD_REJ_RESOURCES);
        ms_log(MS_LOG_INFO, "rdma listener %s: backlog of %u connections full, refused one", l->base.addr,
               RD_BACKLOG);
        return;
    }
    rd_conn *c = NULL;
    if (accept_one(l, ev, deadline_after(l->opt.timeout_ms), &c) < 0) {
        ms_log(MS_LOG_INFO, "rdma listener %s: refused a connection: %s", l->base.addr, ms_last_error());
        return;
    }
    ms_log(MS_LOG_DEBUG, "rdma listener %s: accepted %s on %s", l->base.addr, c->base.peer, c->st.device);
    pthread_mutex_lock(&l->mu);
    l->queue[(l->qhead + l->qlen++) % RD_BACKLOG] = c;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static void *listener_main(void *p)
{
    rd_listener *l = p;
    for (;;) {
        struct pollfd pf[2] = {{.fd = l->ech->fd, .events = POLLIN}, {.fd = l->wake[0], .events = POLLIN}};
        if (poll(pf, 2, -1) < 0 && errno != EINTR) {
            listener_failed(l, MS_ERR_IO, "rdma listener: poll failed");
            return NULL;
        }
        if (pf[1].revents)
            return NULL;
        struct rdma_cm_event *ev;
        while (rdma_get_cm_event(l->ech, &ev) == 0) {
            if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
                handle_request(l, ev);
                continue;
            }
            bool removed = ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL;
            if (!removed)
                ms_log(MS_LOG_DEBUG, "rdma listener %s: ignoring %s", l->base.addr, rdma_event_str(ev->event));
            rdma_ack_cm_event(ev);
            if (removed) {
                char msg[256];
                snprintf(msg, sizeof(msg), "rdma listener %s: the RDMA device was removed "
                         "(RDMA_CM_EVENT_DEVICE_REMOVAL)", l->base.addr);
                listener_failed(l, MS_ERR_IO, msg);
                return NULL;
            }
        }
    }
}

static int rd_accept(ms_listener *ml, ms_conn **out, uint64_t timeout_ms)
{
    rd_listener *l = ml->priv;
    uint64_t deadline = deadline_after(timeout_ms);
    int rc = MS_OK;
    pthread_mutex_lock(&l->mu);
    while (!l->qlen && !l->fail_code) {
        if (!deadline) {
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        if (ms_now_ns() >= deadline)
            break;
        struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000ull),
                              .tv_nsec = (long)(deadline % 1000000000ull)};
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    }
    if (l->qlen) {
        rd_conn *c = l->queue[l->qhead];
        l->qhead = (l->qhead + 1) % RD_BACKLOG;
        l->qlen--;
        *out = &c->base;
    } else if (l->fail_code) {
        rc = ms_error(l->fail_code, "%s", l->fail_msg);
    } else {
        rc = ms_error(MS_ERR_TIMEOUT, "rdma listener %s: no connection within %llu ms", l->base.addr,
                      (unsigned long long)timeout_ms);
    }
    pthread_mutex_unlock(&l->mu);
    return rc;
}

static void rd_listener_close(ms_listener *ml)
{
    rd_listener *l = ml->priv;
    if (l->th_started) {
        if (write(l->wake[1], "x", 1) != 1)
            ms_log(MS_LOG_DEBUG, "rdma listener: cannot wake the accepting thread");
        pthread_join(l->th, NULL);
    }
    while (l->qlen) {
        ms_conn_close(&l->queue[l->qhead]->base);
        l->qhead = (l->qhead + 1) % RD_BACKLOG;
        l->qlen--;
    }
    if (l->id)
        rdma_destroy_id(l->id);
    if (l->ech)
        rdma_destroy_event_channel(l->ech);
    for (int i = 0; i < 2; i++)
        if (l->wake[i] >= 0)
            close(l->wake[i]);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static const ms_listener_ops rd_listener_ops = {.accept = rd_accept, .close = rd_listener_close};

static int bind_address(rd_listener *l, const char *host, const char *port)
{
    struct rdma_addrinfo hints = {.ai_flags = RAI_PASSIVE, .ai_port_space = RDMA_PS_TCP}, *res = NULL;
    struct sockaddr_in6 any = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT};
    struct sockaddr *sa = (struct sockaddr *)&any;
    int rc = MS_OK;
    if (host && *host) {
        if (rdma_getaddrinfo(host, port, &hints, &res) || !res || !res->ai_src_addr) {
            rc = ms_error(MS_ERR_IO, "rdma: cannot resolve %s port %s: %s", host, port,
                          errno ? strerror(errno) : "no address");
            goto out;
        }
        sa = res->ai_src_addr;
    } else {
        char *end;
        unsigned long p = strtoul(port, &end, 10);
        if (!*port || *end || p > 65535) {
            rc = ms_error(MS_ERR_INVAL, "rdma: bad port '%s'", port);
            goto out;
        }
        any.sin6_port = htons((uint16_t)p);
    }
    if (rdma_bind_addr(l->id, sa)) {
        char a[96];
        rd_addr_str(sa, a, sizeof(a));
        rc = ms_error(MS_ERR_IO, "rdma: cannot bind %s: %s", a, strerror(errno));
    }
out:
    if (res)
        rdma_freeaddrinfo(res);
    return rc;
}

int ms_rdma_listen(const char *host, const char *port, const ms_rdma_options *opt, ms_listener **out)
{
    rd_listener *l = calloc(1, sizeof(*l));
    if (!l)
        return ms_error(MS_ERR_NOMEM, "rdma: out of memory");
    l->base.ops = &rd_listener_ops;
    l->base.priv = l;
    l->wake[0] = l->wake[1] = -1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    rd_fill_options(&l->opt, opt);
    int rc = rd_check_options(&l->opt);
    if (rc < 0)
        goto fail;
    if ((rc = ms_rdma_available()) < 0)
        goto fail;
    l->ech = new_channel();
    if (!l->ech) {
        rc = ms_last_code();
        goto fail;
    }
    if (rdma_create_id(l->ech, &l->id, l, RDMA_PS_TCP)) {
        rc = ms_error(MS_ERR_IO, "rdma_create_id: %s", strerror(errno));
        goto fail;
    }
    if ((rc = bind_address(l, host, port)) < 0)
        goto fail;
    if (rdma_listen(l->id, 64)) {
        rc = ms_error(MS_ERR_IO, "rdma: rdma_listen: %s", strerror(errno));
        goto fail;
    }
    struct sockaddr *sa = rdma_get_local_addr(l->id);
    l->base.port = ntohs(rdma_get_src_port(l->id));
    rd_addr_str(sa, l->base.addr, sizeof(l->base.addr));
    l->base.loopback_only = addr_is_loopback(sa);
    if (pipe2(l->wake, O_CLOEXEC)) {
        rc = ms_error(MS_ERR_IO, "rdma: pipe: %s", strerror(errno));
        goto fail;
    }
    if ((errno = pthread_create(&l->th, NULL, listener_main, l))) {
        rc = ms_error(MS_ERR_IO, "rdma: cannot start the accepting thread: %s", strerror(errno));
        goto fail;
    }
    l->th_started = true;
    *out = &l->base;
    return MS_OK;
fail:
    rd_listener_close(&l->base);
    return rc;
}

int ms_rdma_connect_str(const char *hostport, const ms_rdma_options *opt, ms_conn **out)
{
    char host[256], port[32];
    int rc = split_hostport(hostport, host, sizeof(host), port, sizeof(port));
    return rc < 0 ? rc : ms_rdma_connect(host, port, opt, out);
}

int ms_rdma_connect_n(const char *hostport, unsigned n, const ms_rdma_options *opt, ms_conn **conns)
{
    for (unsigned i = 0; i < n; i++) {
        int rc = ms_rdma_connect_str(hostport, opt, &conns[i]);
        if (rc < 0) {
            for (unsigned j = 0; j < i; j++) {
                ms_conn_close(conns[j]);
                conns[j] = NULL;
            }
            return ms_error_wrap(rc, "connecting channel %u to %s over rdma", i, hostport);
        }
    }
    return MS_OK;
}

int ms_rdma_listen_str(const char *hostport, const ms_rdma_options *opt, ms_listener **out)
{
    char host[256], port[32];
    int rc = split_hostport(hostport, host, sizeof(host), port, sizeof(port));
    return rc < 0 ? rc : ms_rdma_listen(host, port, opt, out);
}

int ms_rdma_available(void)
{
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    if (list)
        ibv_free_device_list(list);
    if (!list || n == 0)
        return ms_error(MS_ERR_UNSUPPORTED, "no RDMA device (ibv_get_device_list empty)");
    return MS_OK;
}
