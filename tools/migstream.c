/* `migstream`: one command, one subcommand per job. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "ms_config.h"
#include "tools/tools.h"

typedef struct subcommand {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} subcommand;

static const subcommand commands[] = {
#ifdef MS_HAVE_CMD_DEMO
    {"demo", cmd_demo, "live-migrate a built-in memory-dirtying workload over loopback and report"},
#endif
#ifdef MS_HAVE_CMD_MIGRATE
    {"migrate", cmd_migrate, "live-migrate the memory of a running process or command"},
#endif
#ifdef MS_HAVE_CMD_RECV
    {"recv", cmd_recv, "listen and receive migstream sessions"},
#endif
#ifdef MS_HAVE_CMD_REPLAY
    {"replay", cmd_replay, "send a memory image or recorded stream through a codec chain and transport"},
#endif
#ifdef MS_HAVE_CMD_INSPECT
    {"inspect", cmd_inspect, "print the frames and totals of a recorded stream or libxc stream"},
#endif
#ifdef MS_HAVE_CMD_DIRTYRATE
    {"dirtyrate", cmd_dirtyrate, "measure how fast a running process writes its memory"},
#endif
#ifdef MS_HAVE_CMD_SIM
    {"sim", cmd_sim, "simulate migration policies over traces or workload models"},
#endif
#ifdef MS_HAVE_CMD_BENCH
    {"bench", cmd_bench, "benchmarks (bench codecs)"},
#endif
#ifdef MS_HAVE_CMD_KEYGEN
    {"keygen", cmd_keygen, "write a new pre-shared key file"},
#endif
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: migstream COMMAND [OPTIONS]   (migstream COMMAND --help for details)\n\n"
               "commands:\n");
    for (size_t i = 0; commands[i].name; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nmigstream %s; RDMA transport: %s; Xen preload: %s\n", MS_VERSION,
            MS_HAVE_RDMA ? "built" : "not built (install libibverbs-dev librdmacm-dev and rebuild)",
            MS_HAVE_XEN ? "built" : "not built (install libxen-dev and rebuild; libxc stream tools work without it)");
}

int ms_exit_code(int status)
{
    switch (status) {
    case MS_OK: return MS_EXIT_OK;
    case MS_ERR_INVAL: return MS_EXIT_USAGE;
    case MS_ERR_VERIFY: case MS_ERR_HASH: return MS_EXIT_VERIFY;
    case MS_ERR_TIMEOUT: case MS_ERR_CLOSED: case MS_ERR_ABORTED: case MS_ERR_IO:
    case MS_ERR_VERSION: case MS_ERR_MISMATCH:
        return MS_EXIT_PEER;
    case MS_ERR_AUTH: case MS_ERR_TAMPERED: case MS_ERR_REPLAY: case MS_ERR_REORDER:
        return MS_EXIT_SECURITY;
    default: return MS_EXIT_FAIL;
    }
}

bool ms_tty_progress(void) { return isatty(STDERR_FILENO); }

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? MS_EXIT_USAGE : MS_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("migstream %s\n", MS_VERSION);
        return 0;
    }
    for (size_t i = 0; commands[i].name; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "migstream: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return MS_EXIT_USAGE;
}
