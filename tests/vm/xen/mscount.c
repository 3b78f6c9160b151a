/* mscount: copies stdin to stdout and counts the bytes, so the Xen lane can
 * measure what crosses xl's migration fd: the receive command becomes
 * `mscount FILE | xl migrate-receive`. Every read is written on at once (a
 * held-back byte could stall xl's handshake); at EOF or a write error it
 * writes "bytes=N first_ms=T0 last_ms=T1 status=eof|epipe|error" to FILE
 * (times from CLOCK_MONOTONIC, so first/last bound the transfer). With
 * TEE, a copy of the stream is written there too, for analysis on the host.
 *
 * usage: mscount FILE [TEE] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static char buf[1 << 18];
    uint64_t total = 0;
    int64_t first = -1, last = -1;
    const char *status = "eof";

    int tee = -1;
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: mscount FILE [TEE]\n");
        return 2;
    }
    if (argc == 3 && (tee = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        fprintf(stderr, "mscount: cannot write %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        ssize_t r = read(0, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            status = "error";
            break;
        }
        if (r == 0)
            break;
        if (first < 0)
            first = now_ms();
        last = now_ms();
        total += (uint64_t)r;
        if (write_all(1, buf, (size_t)r) < 0) {
            status = errno == EPIPE ? "epipe" : "error";
            break;
        }
        if (tee >= 0 && write_all(tee, buf, (size_t)r) < 0) {
            fprintf(stderr, "mscount: copy to %s failed: %s\n", argv[2], strerror(errno));
            close(tee);
            tee = -1;
        }
    }
    FILE *f = fopen(argv[1], "w");
    if (!f) {
        fprintf(stderr, "mscount: cannot write %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    fprintf(f, "bytes=%llu first_ms=%lld last_ms=%lld status=%s\n", (unsigned long long)total, (long long)first,
            (long long)last, status);
    fclose(f);
    if (tee >= 0)
        close(tee);
    return strcmp(status, "eof") == 0 ? 0 : 1;
}
