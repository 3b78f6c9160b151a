#include "common/common.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char last_msg[512];
static _Thread_local int last_code;

static const char *const names[MS_ERR_COUNT] = {
    "success",
    "out of memory",
    "invalid argument",
    "corrupt input",
    "truncated input",
    "content hash mismatch",
    "authentication failed (wrong key)",
    "tampered frame",
    "replayed frame",
    "reordered frame",
    "protocol version mismatch",
    "I/O error",
    "timed out",
    "connection closed by peer",
    "not supported",
    "limit exceeded",
    "aborted by peer",
    "verification failed",
    "session parameter mismatch",
};

const char *ms_strerror(int code)
{
    if (code > 0 || -code >= MS_ERR_COUNT)
        return "unknown error";
    return names[-code];
}

int ms_verror(int code, const char *fmt, va_list ap)
{
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    last_code = code;
    return code;
}

int ms_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ms_verror(code, fmt, ap);
    va_end(ap);
    return code;
}

int ms_error_wrap(int code, const char *fmt, ...)
{
    char prefix[256], old[sizeof last_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_msg, sizeof old);
    /* Precision bounds keep the result inside last_msg (and the compiler's
     * truncation analysis quiet): a wrapped message may lose its tail. */
    snprintf(last_msg, sizeof last_msg, "%.200s: %.300s", prefix, old[0] ? old : ms_strerror(code));
    last_code = code;
    return code;
}

const char *ms_last_error(void)
{
    if (!last_msg[0] && last_code)
        return ms_strerror(last_code);
    return last_msg;
}

int ms_last_code(void) { return last_code; }

void ms_clear_error(void)
{
    last_msg[0] = 0;
    last_code = 0;
}

void ms_errbuf_capture(ms_errbuf *eb)
{
    if (eb->code)
        return;
    eb->code = last_code ? last_code : MS_ERR_IO;
    snprintf(eb->msg, sizeof eb->msg, "%s", ms_last_error());
}

int ms_errbuf_raise(const ms_errbuf *eb)
{
    if (!eb->code)
        return MS_OK;
    return ms_error(eb->code, "%s", eb->msg);
}
