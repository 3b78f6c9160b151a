/* `migstream keygen FILE`: write a new pre-shared key for sealed sessions. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "stream/stream.h"
#include "tools/tools.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: migstream keygen [--force] FILE\n"
            "\n"
            "Write a new random 32-byte pre-shared key to FILE as 64 hex digits and a\n"
            "newline, readable by its owner only (mode 0600). Copy the same file to both\n"
            "ends and pass it with --key FILE (MIGSTREAM_KEY_FILE for the Xen preload):\n"
            "each session then proves the key on both sides and seals every frame.\n"
            "\n"
            "  -f, --force   replace FILE if it exists (the old key stops working)\n"
            "  -h, --help    show this help\n");
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool force = false;
    int c, rc;

    while ((c = getopt_long(argc, argv, "fh", opts, NULL)) != -1) {
        switch (c) {
        case 'f': force = true; break;
        case 'h': usage(stdout); return MS_EXIT_OK;
        default: usage(stderr); return MS_EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "migstream keygen: expected exactly one FILE\n");
        usage(stderr);
        return MS_EXIT_USAGE;
    }
    const char *path = argv[optind];
    if (!force && access(path, F_OK) == 0) {
        fprintf(stderr, "migstream keygen: %s already exists; not overwriting it (use --force to replace it)\n",
                path);
        return MS_EXIT_FAIL;
    }
    /* Replacing means removing first: ms_key_generate never writes into an
     * existing file, whose permissions might be wider than 0600. */
    if (force && unlink(path) < 0 && errno != ENOENT) {
        fprintf(stderr, "migstream keygen: cannot remove %s: %s\n", path, strerror(errno));
        return MS_EXIT_FAIL;
    }
    rc = ms_key_generate(path);
    if (rc < 0) {
        fprintf(stderr, "migstream keygen: %s\n", ms_last_error());
        return MS_EXIT_FAIL; /* a local file problem, whatever the code */
    }
    printf("wrote a new key to %s (mode 0600)\n", path);
    return MS_EXIT_OK;
}
