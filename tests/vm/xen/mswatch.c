/* mswatch: dom0 side of the guest counter. Follows xenconsoled's guest
 * logs (every guest-*.log in DIR, including ones created later, such as
 * guest-NAME--incoming.log after a local migration) with inotify and, for
 * each "MSCTR <n> ..." line, appends "<name> <n> <dom0 ms>" to OUT, where
 * ms is CLOCK_MONOTONIC in dom0. The guest's own clocks cannot show a pause
 * (Linux does not always step its wall clock on resume), dom0's can: the
 * largest gap between consecutive counters around a migration, minus the
 * print period, is the downtime the guest suffered.
 *
 * One long-lived process, woken only when a log grows: short-lived
 * processes are costly in a PV dom0 under TCG.
 *
 * usage: mswatch DIR OUT */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#define MAX_LOGS 32
#define LINE_MAX_LEN 512

typedef struct log_file {
    char name[128]; /* guest name: file name between "guest-" and ".log" */
    int fd;
    char line[LINE_MAX_LEN];
    size_t used;
} log_file;

static log_file logs[MAX_LOGS];
static int nlogs;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void open_log(const char *dir, const char *file)
{
    size_t len = strlen(file);
    if (strncmp(file, "guest-", 6) != 0 || len < 11 || strcmp(file + len - 4, ".log") != 0)
        return;
    for (int i = 0; i < nlogs; i++)
        if (strlen(logs[i].name) == len - 10 && strncmp(logs[i].name, file + 6, len - 10) == 0)
            return;
    if (nlogs == MAX_LOGS || len - 10 >= sizeof(logs[0].name))
        return;
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    log_file *l = &logs[nlogs++];
    memcpy(l->name, file + 6, len - 10);
    l->name[len - 10] = '\0';
    l->fd = fd;
    l->used = 0;
}

static void scan_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        open_log(dir, e->d_name);
    closedir(d);
}

static void emit_line(FILE *out, const log_file *l, const char *line, int64_t t)
{
    unsigned long long n;
    const char *p = strstr(line, "MSCTR ");
    if (p && sscanf(p + 6, "%llu", &n) == 1)
        fprintf(out, "%s %llu %lld\n", l->name, n, (long long)t);
}

static void drain(FILE *out, log_file *l)
{
    char buf[4096];
    ssize_t r;
    int64_t t = now_ms();
    while ((r = read(l->fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < r; i++) {
            char c = buf[i];
            if (c == '\n') {
                l->line[l->used] = '\0';
                emit_line(out, l, l->line, t);
                l->used = 0;
            } else if (l->used < LINE_MAX_LEN - 1) {
                l->line[l->used++] = c;
            }
        }
    }
    fflush(out);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: mswatch DIR OUT\n");
        return 2;
    }
    const char *dir = argv[1];
    FILE *out = fopen(argv[2], "a");
    if (!out) {
        fprintf(stderr, "mswatch: cannot open %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    int in = inotify_init1(IN_CLOEXEC);
    if (in < 0 || inotify_add_watch(in, dir, IN_MODIFY | IN_CREATE) < 0) {
        fprintf(stderr, "mswatch: inotify on %s: %s\n", dir, strerror(errno));
        return 1;
    }
    scan_dir(dir);
    for (;;) {
        for (int i = 0; i < nlogs; i++)
            drain(out, &logs[i]);
        char ev[4096];
        ssize_t r = read(in, ev, sizeof(ev));
        if (r < 0 && errno != EINTR)
            return 1;
        /* Which file changed hardly matters: draining all is cheap, and a
         * created file is picked up by rescanning. */
        scan_dir(dir);
    }
}
