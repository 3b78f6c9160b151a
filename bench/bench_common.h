/* Helpers shared by the benchmarks in bench/.
 *
 * The plain TCP baseline is what the transport and pipeline benchmarks are
 * measured against ("none over one loopback TCP connection reaches at least
 * 90% of a plain TCP sender/receiver"): loopback connections driven with
 * blocking write()/read() of 1 MiB buffers, kernel default socket options,
 * no framing and no migstream code at all.
 *
 * Units: every *_gbps function returns GB/s = 10^9 payload BYTES per second
 * (not gigabits), or a negative ms_status with the message in ms_last_error(). */
#ifndef MS_BENCH_COMMON_H
#define MS_BENCH_COMMON_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One plain loopback TCP connection moving `bytes`. */
double ms_bench_plain_tcp_gbps(size_t bytes);
/* `conns` plain connections in parallel moving `bytes` between them. */
double ms_bench_plain_tcp_gbps_n(size_t bytes, int conns);
/* The same through migstream's TCP transport: ms_tcp_listen/ms_tcp_connect
 * and ms_conn_sendv/ms_conn_recv, `conns` connections in parallel. */
double ms_bench_conn_tcp_gbps(size_t bytes, int conns);

/* CPU seconds the whole process spent in the last call above. */
double ms_bench_last_cpu_s(void);

/* Median of n values (sorts v in place). */
double ms_bench_median(double *v, int n);

#ifdef __cplusplus
}
#endif
#endif
