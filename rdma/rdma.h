/* migstream RDMA transport: ms_conn / ms_listener objects over librdmacm and
 * libibverbs, with the same ops as tcp/, so the stream layer, the tools and
 * the Xen preload pick it by name ("rdma").
 *
 * One RC queue pair per connection (= per channel). Each side owns a receive
 * ring of `ring_slots` registered slots of `slot_size` bytes; the peer places
 * bytes there with RDMA WRITE WITH IMMEDIATE (the immediate names the slot and
 * the length), and the receiver hands slots back as credits once it has
 * copied them out, so a sender never overruns the ring. Ring address, rkey
 * and geometry travel in the rdma_cm connect / accept private data. Pieces of
 * a send of at least `zcopy_min` bytes are written straight from the caller's
 * memory through a small per-connection registration cache (see docs/rdma.md);
 * smaller pieces are copied into a registered staging ring.
 *
 * Built only when meson finds libibverbs and librdmacm (MS_HAVE_RDMA in
 * ms_config.h); include this header only under `#if MS_HAVE_RDMA`. */
#ifndef MS_RDMA_H
#define MS_RDMA_H

#include "transport/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_RDMA_DEFAULT_SLOTS 32u
#define MS_RDMA_MAX_SLOTS 1024u
#define MS_RDMA_DEFAULT_SLOT_SIZE (256u * 1024u)
#define MS_RDMA_MIN_SLOT_SIZE 4096u
#define MS_RDMA_MAX_SLOT_SIZE (1024u * 1024u)
/* Defaults suited to Soft-RoCE under emulation, where even loopback packets
 * are retransmitted: ~1.07 s ACK timeout, 7 retries. */
#define MS_RDMA_DEFAULT_ACK_TIMEOUT 18u
#define MS_RDMA_DEFAULT_RETRY_CNT 7u
#define MS_RDMA_DEFAULT_ZCOPY_MIN (64u * 1024u)
#define MS_RDMA_DEFAULT_REG_CACHE 16u

/* Zero fields take the defaults above. */
typedef struct ms_rdma_options {
    uint64_t timeout_ms;        /* connect and no-progress timeout; 0 = MS_DEFAULT_TIMEOUT_MS */
    unsigned ring_slots;        /* receive ring slots = send credits the peer gets; <= 1024 */
    uint32_t slot_size;         /* bytes per slot = largest single RDMA write; 4 KiB..1 MiB */
    uint8_t ack_timeout;        /* QP local ACK timeout, 4.096 us << n (n <= 31) */
    uint8_t retry_cnt;          /* transport retries before the QP fails (1..7) */
    size_t zcopy_min;           /* iov pieces this large go without a copy; SIZE_MAX: always copy */
    unsigned reg_cache_entries; /* registrations kept per connection */
    unsigned connect_retries;   /* retries, 200 ms apart, while no listener answers */
} ms_rdma_options;

/* Parse "slots=64,slot-size=256K,ack-timeout=18,retry=7,zcopy-min=64K,
 * reg-cache=16,timeout=10s,connect-retries=5" (any subset, any order) into
 * *o, leaving other fields unchanged. MS_ERR_INVAL naming the bad item. */
int ms_rdma_options_parse(const char *spec, ms_rdma_options *o);

/* host may be a name or an IPv4 / IPv6 literal; the address must belong to
 * (or route through) a netdev with an RDMA device (e.g. rxe0 on eth0). */
int ms_rdma_connect(const char *host, const char *port, const ms_rdma_options *opt, ms_conn **out);
/* Listen on host:port (host NULL or "" = all addresses; port "0" picks a
 * free port, readable from l->port). accept() rejects peers whose private
 * data is not this transport's (wrong magic or version), logs them, and
 * keeps waiting for a good one until its deadline. */
int ms_rdma_listen(const char *host, const char *port, const ms_rdma_options *opt, ms_listener **out);

/* The same from one "HOST:PORT" / "[V6]:PORT" string, as the tools take it;
 * opt may be NULL. This is what `--transport rdma` calls. */
int ms_rdma_connect_str(const char *hostport, const ms_rdma_options *opt, ms_conn **out);
int ms_rdma_listen_str(const char *hostport, const ms_rdma_options *opt, ms_listener **out);
/* n connections (channels 0..n-1 of one session) to "HOST:PORT"; on failure
 * none is left open and the message names the channel. */
int ms_rdma_connect_n(const char *hostport, unsigned n, const ms_rdma_options *opt, ms_conn **conns);

/* MS_OK if this machine has at least one RDMA device; otherwise
 * MS_ERR_UNSUPPORTED with the reason in ms_last_error()
 * ("no RDMA device (ibv_get_device_list empty)"). */
int ms_rdma_available(void);

/* Counters of one rdma connection (MS_ERR_INVAL if c is not one). */
typedef struct ms_rdma_stats {
    char device[64];              /* e.g. "rxe0" */
    uint32_t slots, slot_size;    /* our receive ring */
    uint32_t peer_slots, peer_slot_size;
    bool zcopy;                   /* registrations can be validated: zero-copy in use */
    uint64_t writes;              /* data RDMA WRITE WITH IMM posted */
    uint64_t bytes_copied;        /* payload staged through the copy ring */
    uint64_t bytes_zcopy;         /* payload written from the caller's registered memory */
    uint64_t reg_hits, reg_misses, reg_stale, reg_failures;
    uint64_t credit_msgs_sent, credit_msgs_recv;
    uint64_t credit_waits;        /* sends that found no free peer slot */
} ms_rdma_stats;
int ms_rdma_conn_stats(const ms_conn *c, ms_rdma_stats *out);

#ifdef __cplusplus
}
#endif
#endif
