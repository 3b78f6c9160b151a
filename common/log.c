#include "common/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int log_level = -1;

int ms_log_level_parse(const char *s)
{
    if (!s)
        return -1;
    if (!strcasecmp(s, "error"))
        return MS_LOG_ERROR;
    if (!strcasecmp(s, "info"))
        return MS_LOG_INFO;
    if (!strcasecmp(s, "debug"))
        return MS_LOG_DEBUG;
    return -1;
}

void ms_log_set_level(int level) { log_level = level; }

int ms_log_get_level(void)
{
    if (log_level < 0) {
        int l = ms_log_level_parse(getenv("MIGSTREAM_LOG"));
        log_level = l < 0 ? MS_LOG_ERROR : l;
    }
    return log_level;
}

void ms_log(int level, const char *fmt, ...)
{
    static const char *const tag[] = {"error", "info", "debug"};
    char line[1024];
    va_list ap;
    if (level > ms_log_get_level())
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One fprintf per line so lines from several threads do not interleave. */
    fprintf(stderr, "migstream: %s: %s\n", tag[level < 0 ? 0 : level > 2 ? 2 : level], line);
}
