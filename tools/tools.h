/* Subcommands of the `migstream` tool. Each returns a process exit code:
 * 0 success, 1 the operation failed (message printed), 2 bad usage,
 * 3 verification failed (data differs), 4 peer/transport failure,
 * 5 authentication or integrity failure (wrong key, tampered stream). */
#ifndef MS_TOOLS_H
#define MS_TOOLS_H

#include <stdbool.h>

enum ms_exit {
    MS_EXIT_OK = 0,
    MS_EXIT_FAIL = 1,
    MS_EXIT_USAGE = 2,
    MS_EXIT_VERIFY = 3,
    MS_EXIT_PEER = 4,
    MS_EXIT_SECURITY = 5,
};

/* Map a negative ms_status to one of the exit codes above. */
int ms_exit_code(int status);

int cmd_bench(int argc, char **argv);
int cmd_recv(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_dirtyrate(int argc, char **argv);

/* True when stderr is a terminal (progress lines go there). */
bool ms_tty_progress(void);

#endif
