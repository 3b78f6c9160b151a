/* The process to work on, for the commands that track a live process
 * (migrate, dirtyrate): --pid or -- COMMAND, and how a started command is
 * waited for before tracking starts. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/toolutil.h"

void ms_tool_proc_init(ms_tool_proc *p)
{
    memset(p, 0, sizeof(*p));
    p->warmup_s = -1;
    p->max_pages = (16ull << 30) / MS_PAGE_SIZE;
}

int ms_tool_proc_option(ms_tool_proc *p, int opt, const char *v)
{
    unsigned n;
    uint64_t u;
    int rc;
    switch (opt) {
    case MS_TOOL_OPT_PID:
        if ((rc = ms_tool_uint("--pid", v, 1, 1u << 30, &n)))
            return rc;
        p->pid = (int)n;
        return MS_OK;
    case MS_TOOL_OPT_CHILDREN: p->children = true; return MS_OK;
    case MS_TOOL_OPT_WARMUP: return ms_tool_number("--warmup", v, 0, 3600, &p->warmup_s);
    case MS_TOOL_OPT_READY: p->ready = v; return MS_OK;
    case MS_TOOL_OPT_CMDOUT: p->command_output = v; return MS_OK;
    case MS_TOOL_OPT_MAXMEM:
        if (ms_parse_size(v, &u) || u < MS_PAGE_SIZE)
            return ms_error(MS_ERR_INVAL, "--max-memory: bad size '%s'", v);
        p->max_pages = u / MS_PAGE_SIZE;
        return MS_OK;
    default: return ms_error(MS_ERR_INVAL, "option %d is not a process option", opt);
    }
}

int ms_tool_proc_check(ms_tool_proc *p, char **rest)
{
    p->command = rest && *rest ? rest : NULL;
    if (!p->pid == !p->command)
        return ms_error(MS_ERR_INVAL, "give exactly one of --pid PID or -- COMMAND");
    if (p->children && !p->pid)
        return ms_error(MS_ERR_INVAL, "--children goes with --pid (a started COMMAND's children are tracked anyway)");
    if (p->warmup_s < 0)
        p->warmup_s = p->command ? 2 : 0;
    if (p->ready && !p->command)
        return ms_error(MS_ERR_INVAL, "--ready needs -- COMMAND");
    if (p->ready && !p->command_output) {
        snprintf(p->ready_file, sizeof(p->ready_file), "/tmp/migstream-cmd-XXXXXX");
        int fd = mkstemp(p->ready_file);
        if (fd < 0)
            return ms_error(MS_ERR_IO, "cannot create a file for COMMAND's output: %s", strerror(errno));
        close(fd);
        p->command_output = p->ready_file;
    }
    if (!p->command_output)
        p->command_output = "/dev/null";
    return MS_OK;
}

void ms_tool_proc_cleanup(ms_tool_proc *p)
{
    if (p->ready_file[0])
        unlink(p->ready_file);
    p->ready_file[0] = 0;
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

/* A started command is worth tracking once it has built its memory: wait
 * for the line it prints then (it writes to a file we poll). */
static int wait_ready(const ms_tool_proc *p)
{
    uint64_t deadline = ms_now_ns() + 120ull * 1000000000ull;
    char buf[8192];
    while (ms_now_ns() < deadline) {
        FILE *f = fopen(p->command_output, "r");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = 0;
        if (strstr(buf, p->ready))
            return MS_OK;
        sleep_s(0.02);
    }
    return ms_error(MS_ERR_TIMEOUT, "COMMAND did not print '%s' within 120 s (its output: %s)",
                    p->ready, p->command_output);
}

int ms_tool_proc_open(const ms_tool_proc *p, ms_page_source **src)
{
    ms_process_opts po = {.max_pages = p->max_pages};
    int rc = ms_process_probe();
    if (rc)
        return rc;
    if (p->pid) {
        po.flags = p->children ? MS_PROC_CHILDREN : 0;
        return ms_process_source_attach(p->pid, &po, src);
    }
    po.output = p->command_output;
    if (p->ready_file[0] && truncate(p->ready_file, 0) < 0)
        return ms_error(MS_ERR_IO, "%s: %s", p->ready_file, strerror(errno));
    rc = ms_process_source_spawn(p->command, &po, src);
    if (!rc && p->ready)
        rc = wait_ready(p);
    if (rc) {
        ms_errbuf eb = {0};
        ms_errbuf_capture(&eb);
        ms_source_destroy(*src);
        *src = NULL;
        return ms_errbuf_raise(&eb);
    }
    sleep_s(p->warmup_s);
    return MS_OK;
}
