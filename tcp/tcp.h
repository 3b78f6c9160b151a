/* migstream TCP transport: one ms_conn per TCP connection; a session opens
 * N of them for N parallel channels. IPv4 and IPv6. */
#ifndef MS_TCP_H
#define MS_TCP_H

#include "transport/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_tcp_options {
    uint64_t timeout_ms;   /* connect and no-progress timeout; 0 = default */
    int sndbuf, rcvbuf;    /* socket buffer sizes; 0 = at least 4 MiB reachable (kernel
                            * autotuning when its maximum allows, else fixed 4 MiB) */
    unsigned connect_retries; /* retries while the peer refuses (listener not up yet) */
} ms_tcp_options;

/* host may be a name, an IPv4 or IPv6 literal (with or without brackets). */
int ms_tcp_connect(const char *host, const char *port, const ms_tcp_options *opt, ms_conn **out);
/* Listen on host:port (host NULL or "" means all addresses; port "0" picks
 * a free port, readable from l->port). */
int ms_tcp_listen(const char *host, const char *port, const ms_tcp_options *opt, ms_listener **out);

/* Split "host:port", "[v6]:port" into parts (buffers of hn / pn bytes). */
int ms_split_hostport(const char *s, char *host, size_t hn, char *port, size_t pn);

#ifdef __cplusplus
}
#endif
#endif
