/* Internals of the rdma transport shared by its .c files (not an interface). */
#ifndef MS_RDMA_PRIV_H
#define MS_RDMA_PRIV_H

#include <infiniband/verbs.h>
#include <pthread.h>
#include <rdma/rdma_cma.h>

#include "rdma/rdma.h"

/* Connection private data: what each side tells the other about its ring.
 * Little-endian, RD_INFO_SIZE bytes (rdma_connect allows 56). */
#define RD_MAGIC 0x4452534du /* "MSRD" */
#define RD_PROTO_VERSION 1u
#define RD_INFO_SIZE 28u
typedef struct rd_info {
    uint32_t magic;
    uint16_t version;
    uint16_t flags;
    uint64_t ring_addr;
    uint32_t rkey;
    uint32_t slots;
    uint32_t slot_size;
} rd_info;
void rd_info_pack(const rd_info *in, uint8_t out[RD_INFO_SIZE]);
/* MS_ERR_VERSION (magic or version), MS_ERR_MISMATCH (geometry out of range). */
int rd_info_unpack(const void *p, size_t len, rd_info *out);

/* Reject private data: magic, our version, reason. */
#define RD_REJECT_SIZE 8u
enum rd_reject_reason { RD_REJ_VERSION = 1, RD_REJ_GEOMETRY = 2, RD_REJ_RESOURCES = 3 };

/* Immediate data (host order after ntohl):
 *   bit 31 clear: data; bits 21..30 slot, bits 0..20 length (<= 1 MiB);
 *   bit 31 set:   control; bit 30 set = end of stream (FIN),
 *                 otherwise bits 0..15 = slots handed back (credits). */
#define RD_IMM_CTRL 0x80000000u
#define RD_IMM_FIN 0x40000000u
#define RD_IMM_SLOT_SHIFT 21
#define RD_IMM_SLOT_MASK 0x3ffu
#define RD_IMM_LEN_MASK 0x1fffffu
#define RD_IMM_CREDIT_MASK 0xffffu

enum rd_wr_kind { RD_WR_RECV = 1, RD_WR_DATA = 2, RD_WR_CTRL = 3 };

#define RD_MAX_SGE 8

typedef struct rd_reg {
    uintptr_t start, end;   /* page-aligned registered range */
    struct ibv_mr *mr;
    uint64_t *pfn;          /* /proc/self/pagemap entries at registration */
    uint64_t stamp;         /* sendv generation that last used it */
} rd_reg;

typedef struct rd_conn {
    ms_conn base;
    ms_rdma_options opt;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool polling;            /* one thread waits in poll() for the others */

    struct rdma_event_channel *ech;
    struct rdma_cm_id *id;
    struct ibv_pd *pd;
    struct ibv_comp_channel *cch;
    struct ibv_cq *cq;
    unsigned cq_unacked;
    bool connected, torn_down;
    int max_sge;
    unsigned sq_cap, rq_cap;  /* work requests the queues hold */

    /* Our receive ring (the peer writes here). */
    uint8_t *ring;
    struct ibv_mr *ring_mr;
    uint32_t slots, slot_size;
    uint32_t *slot_len;
    uint64_t rx_filled;      /* data writes landed */
    uint64_t rx_consumed;    /* slots fully copied out */
    size_t rx_off;           /* bytes already copied out of the head slot */
    uint32_t credits_owed;   /* consumed slots not yet handed back */
    bool fin_seen;

    /* The peer's ring and our staging copy of it. */
    uint64_t peer_ring;
    uint32_t peer_rkey, peer_slots, peer_slot_size;
    uint8_t *stage;
    struct ibv_mr *stage_mr;
    uint64_t tx_posted;      /* data writes posted */
    uint64_t tx_acked;       /* data writes completed */
    uint64_t tx_limit;       /* may post write n while n < tx_limit (credits) */
    unsigned ctrl_out;       /* control writes not completed */
    bool fin_sent;

    /* Failure: the first cause wins. */
    int fail_code;
    char fail_msg[400];
    bool disconnected;
    uint64_t flush_ns;       /* a flushed completion not yet explained */

    rd_reg *regs;
    unsigned nregs;
    uint64_t gen;

    ms_rdma_stats st;
} rd_conn;

extern const ms_conn_ops rd_conn_ops;

/* rdma_cm.c */
void rd_fill_options(ms_rdma_options *o, const ms_rdma_options *in);
int rd_check_options(const ms_rdma_options *o);
void rd_addr_str(const struct sockaddr *sa, char *out, size_t n);

/* rdma_data.c */
rd_conn *rd_conn_alloc(const ms_rdma_options *opt);
/* Create PD, CQ, QP and the receive ring on c->id (address and route
 * already resolved, or a connect request). */
int rd_setup_verbs(rd_conn *c);
/* After the peer's ring is known: staging ring, receives, credits. */
int rd_setup_peer(rd_conn *c, const rd_info *peer);
void rd_local_info(const rd_conn *c, rd_info *out);
void rd_conn_destroy(rd_conn *c);
int rd_fail(rd_conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Handle one cm event on an established connection (mu held). */
void rd_cm_event(rd_conn *c, struct rdma_cm_event *ev);

/* rdma_reg.c: registration cache (mu held). */
bool rd_reg_usable(void);
struct ibv_mr *rd_reg_get(rd_conn *c, const void *p, size_t len);
void rd_reg_clear(rd_conn *c);

#endif
