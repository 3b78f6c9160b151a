#include "common/common.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

uint64_t ms_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double ms_process_cpu_s(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }
double ms_thread_cpu_s(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); }

size_t ms_uleb_put(uint8_t *dst, uint64_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        dst[n++] = b | (v ? 0x80 : 0);
    } while (v);
    return n;
}

size_t ms_uleb_get(const uint8_t *src, size_t len, uint64_t *v)
{
    uint64_t r = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        uint64_t b = src[i] & 0x7f;
        if (i == 9 && b > 1)
            return 0; /* would overflow 64 bits */
        r |= b << (7 * i);
        if (!(src[i] & 0x80)) {
            *v = r;
            return i + 1;
        }
    }
    return 0;
}

int ms_buf_reserve(ms_buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return MS_OK;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return ms_error(MS_ERR_NOMEM, "cannot grow buffer to %zu bytes", cap);
    b->data = p;
    b->cap = cap;
    return MS_OK;
}

int ms_buf_append(ms_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return MS_OK; /* memcpy from a NULL source is undefined even for 0 bytes */
    int rc = ms_buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return MS_OK;
}

void ms_buf_free(ms_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* A double that fits a uint64_t (converting one that does not is undefined). */
static int to_u64(double v, uint64_t *out)
{
    if (!(v >= 0) || v >= 18446744073709551616.0)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Number followed by an optional unit; returns the unit text. */
static int split_number(const char *s, double *num, const char **unit)
{
    char *end;
    if (!s || !*s)
        return -1;
    errno = 0;
    *num = strtod(s, &end);
    if (errno || end == s || *num < 0)
        return -1;
    while (isspace((unsigned char)*end))
        end++;
    *unit = end;
    return 0;
}

int ms_parse_size(const char *s, uint64_t *out)
{
    static const struct { const char *u; double m; } units[] = {
        {"", 1}, {"b", 1}, {"k", 1024.0}, {"kb", 1024.0}, {"kib", 1024.0},
        {"m", 1048576.0}, {"mb", 1048576.0}, {"mib", 1048576.0},
        {"g", 1073741824.0}, {"gb", 1073741824.0}, {"gib", 1073741824.0},
        {"t", 1099511627776.0}, {"tib", 1099511627776.0},
    };
    double n;
    const char *u;
    if (split_number(s, &n, &u))
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcasecmp(u, units[i].u))
            return to_u64(n * units[i].m, out);
    return -1;
}

int ms_parse_rate(const char *s, uint64_t *bytes_per_s)
{
    static const struct { const char *u; double m; } units[] = {
        {"", 1}, {"b", 1}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9},
        {"kbit", 125.0}, {"mbit", 125e3}, {"gbit", 125e6},
        {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9},
        {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0},
    };
    double n;
    const char *u;
    char unit[16];
    if (split_number(s, &n, &u))
        return -1;
    size_t ul = strlen(u);
    if (ul >= sizeof unit)
        return -1;
    memcpy(unit, u, ul + 1);
    if (ul >= 2 && !strcasecmp(unit + ul - 2, "/s"))
        unit[ul - 2] = 0;
    else if (ul >= 2 && !strcasecmp(unit + ul - 2, "ps"))
        unit[ul - 2] = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcasecmp(unit, units[i].u))
            return to_u64(n * units[i].m, bytes_per_s);
    return -1;
}

int ms_parse_duration_ms(const char *s, uint64_t *ms)
{
    double n;
    const char *u;
    if (split_number(s, &n, &u))
        return -1;
    if (!*u || !strcasecmp(u, "s"))
        return to_u64(n * 1000, ms);
    if (!strcasecmp(u, "ms"))
        return to_u64(n, ms);
    if (!strcasecmp(u, "m") || !strcasecmp(u, "min"))
        return to_u64(n * 60000, ms);
    return -1;
}
