/* migstream common layer: error codes and messages, logging, clocks, varints.
 * Every other module depends on this one and nothing else of the project. */
#ifndef MS_COMMON_H
#define MS_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MS_PAGE_SIZE 4096u
#define MS_PAGE_SHIFT 12u

/* Status codes: 0 is success, every failure is a distinct negative value so
 * callers (and exit codes) can tell a wrong key from a truncated stream. */
enum ms_status {
    MS_OK = 0,
    MS_ERR_NOMEM = -1,       /* allocation failed */
    MS_ERR_INVAL = -2,       /* impossible option or argument */
    MS_ERR_CORRUPT = -3,     /* malformed input: bad length, index, magic */
    MS_ERR_TRUNCATED = -4,   /* input ended before a structure was complete */
    MS_ERR_HASH = -5,        /* decoded content does not match its hash */
    MS_ERR_AUTH = -6,        /* peer does not prove the pre-shared key */
    MS_ERR_TAMPERED = -7,    /* sealed frame failed authentication */
    MS_ERR_REPLAY = -8,      /* frame sequence number seen before */
    MS_ERR_REORDER = -9,     /* frame arrived out of order on its channel */
    MS_ERR_VERSION = -10,    /* peer speaks another protocol version */
    MS_ERR_IO = -11,         /* system call failed (errno in the message) */
    MS_ERR_TIMEOUT = -12,    /* peer stopped answering within the deadline */
    MS_ERR_CLOSED = -13,     /* peer closed the connection early */
    MS_ERR_UNSUPPORTED = -14,/* feature not built in or not available here */
    MS_ERR_LIMIT = -15,      /* a configured bound would be exceeded */
    MS_ERR_ABORTED = -16,    /* the peer aborted the session with a reason */
    MS_ERR_VERIFY = -17,     /* end-to-end verification found a difference */
    MS_ERR_MISMATCH = -18,   /* peers disagree on session parameters */
};
#define MS_ERR_COUNT 19

/* Short fixed name of a status code, e.g. "wrong key". */
const char *ms_strerror(int code);

/* Record an error for the calling thread: the message is kept in a
 * thread-local buffer until the next ms_error() on that thread.
 * Returns `code` so callers can write `return ms_error(...)`. */
int ms_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ms_verror(int code, const char *fmt, va_list ap);
/* Prefix the current thread's message with context ("channel 2: ..."). */
int ms_error_wrap(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The last message recorded on this thread ("" if none). */
const char *ms_last_error(void);
int ms_last_code(void);
void ms_clear_error(void);

/* An error captured from one thread to be reported by another. */
typedef struct ms_errbuf {
    int code;
    char msg[512];
} ms_errbuf;
/* Save the calling thread's error into `eb` unless `eb` already holds one
 * (the first failure is the cause; later ones are consequences). Thread-safe
 * only under the caller's lock. */
void ms_errbuf_capture(ms_errbuf *eb);
/* Make `eb` the calling thread's current error; returns eb->code. */
int ms_errbuf_raise(const ms_errbuf *eb);

/* Logging to stderr; level from ms_log_set_level or MIGSTREAM_LOG. */
enum ms_log_level { MS_LOG_ERROR = 0, MS_LOG_INFO = 1, MS_LOG_DEBUG = 2 };
void ms_log_set_level(int level);
int ms_log_get_level(void);
int ms_log_level_parse(const char *s); /* -1 if not error|info|debug */
void ms_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clocks. */
uint64_t ms_now_ns(void);         /* CLOCK_MONOTONIC */
double ms_process_cpu_s(void);    /* CPU time of the whole process */
double ms_thread_cpu_s(void);     /* CPU time of the calling thread */

/* Unsigned LEB128. put returns bytes written (<= 10); get returns bytes
 * read or 0 if the input is truncated or longer than 10 bytes / overflows. */
size_t ms_uleb_put(uint8_t *dst, uint64_t v);
size_t ms_uleb_get(const uint8_t *src, size_t len, uint64_t *v);
static inline size_t ms_uleb_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}
static inline uint64_t ms_zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static inline int64_t ms_unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* Little-endian loads and stores for wire formats. */
static inline void ms_put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void ms_put_le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void ms_put_le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline uint16_t ms_get_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t ms_get_le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t ms_get_le64(const uint8_t *p) {
    return (uint64_t)ms_get_le32(p) | ((uint64_t)ms_get_le32(p + 4) << 32);
}

/* A growable byte buffer. */
typedef struct ms_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} ms_buf;
int ms_buf_reserve(ms_buf *b, size_t extra); /* ensure len + extra fits */
int ms_buf_append(ms_buf *b, const void *p, size_t n);
void ms_buf_free(ms_buf *b);

/* Parse sizes like "512M", "4GiB", "100000" and rates like "1G" (bits are
 * not guessed: rates are bytes/s; "1gbit" means 125000000). -1 on error. */
int ms_parse_size(const char *s, uint64_t *out);
int ms_parse_rate(const char *s, uint64_t *bytes_per_s);
/* Parse a duration "10", "10s", "500ms". */
int ms_parse_duration_ms(const char *s, uint64_t *ms);

#ifdef __cplusplus
}
#endif
#endif
