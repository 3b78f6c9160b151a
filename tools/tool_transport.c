/* The network options `migstream recv` and `migstream replay` share:
 * --transport, --rdma-opts, --key, --workers, --timeout, --json, --quiet
 * (see toolutil.h). One place parses and checks them, so both tools take
 * and refuse them with the same words. */
#include <string.h>

#include "tools/toolutil.h"

int ms_tool_net_option(const char *cmd, ms_tool_net *n, int c, int transport_c, int rdma_c, const char *arg)
{
    int rc = MS_OK;
    if (c == transport_c)
        n->transport = arg;
    else if (c == rdma_c)
        n->rdma_opts = arg;
    else if (c == 'k')
        n->key_file = arg;
    else if (c == 'w')
        rc = ms_opt_uint(cmd, "--workers", arg, 1, 256, &n->workers);
    else if (c == 'T')
        rc = ms_opt_duration(cmd, "--timeout", arg, &n->timeout_ms);
    else if (c == 'j')
        n->json = true;
    else if (c == 'q')
        n->quiet = true;
    else
        return 0;
    return rc < 0 ? -1 : 1;
}

int ms_tool_net_check(const char *cmd, ms_tool_net *n)
{
    n->fd = !strcmp(n->transport, "fd");
    if (!n->fd && ms_tool_check_transport(cmd, n->transport, n->rdma_opts) < 0)
        return -1;
    if (n->fd && n->rdma_opts)
        return ms_tool_usage_error(cmd, "--rdma-opts applies to --transport rdma only"), -1;
    return 0;
}

int ms_tool_net_load_key(const char *cmd, ms_tool_net *n)
{
    if (!n->key_file)
        return MS_EXIT_OK;
    int rc = ms_key_load(n->key_file, n->key);
    if (rc < 0)
        return ms_tool_fail(cmd, rc);
    n->have_key = true;
    return MS_EXIT_OK;
}
