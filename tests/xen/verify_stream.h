/* Xen's own stream checker, verify-stream-v2 from Debian's xen-utils-4.17,
 * for the tests: it exits 0 for a valid stream, 1 for a stream error, 2 for
 * a script error. Debian installs its Python modules outside sys.path. */
#ifndef MS_TEST_VERIFY_STREAM_H
#define MS_TEST_VERIFY_STREAM_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERIFY_STREAM "/usr/lib/xen-4.17/bin/verify-stream-v2"
#define VERIFY_PYTHONPATH "/usr/lib/xen-4.17/lib/python"

/* True if installed (with the module for `format`); else prints SKIP. */
static inline bool verify_stream_available(const char *format)
{
    char module[200];
    snprintf(module, sizeof module, VERIFY_PYTHONPATH "/xen/migration/%s.py", format);
    if (access(VERIFY_STREAM, X_OK) == 0 && access(module, R_OK) == 0)
        return true;
    printf("\n  SKIP: %s not installed (Debian package xen-utils-4.17)\n", VERIFY_STREAM);
    return false;
}

/* Its exit status on a file read as `format` (libxc, libxl or xl); -1 if
 * it could not run. */
static inline int verify_stream_file(const char *path, const char *format)
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        setenv("PYTHONPATH", VERIFY_PYTHONPATH, 1);
        execl(VERIFY_STREAM, VERIFY_STREAM, "-f", format, "-i", path, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#endif
