/* test_sources_child: the workload of the process-source tests. It runs
 * commands from fd 3 (write these pages, map, remap, unmap, spin, fork a
 * process sharing a memfd, exit) and answers on fd 4. Built without
 * sanitizers: a sanitizer's terabytes of shadow mappings are not the
 * memory of a workload. Only libc. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "tests/sources/child_proto.h"

#define PAGE 4096u

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint8_t *g_region;
static int g_gc_to = -1, g_gc_from = -1;

static void full_read(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r <= 0)
            _exit(3);
        b += r;
        n -= (size_t)r;
    }
}

static void reply(int fd, uint64_t v)
{
    if (write(fd, &v, sizeof v) != sizeof v)
        _exit(4);
}

static void grandchild_loop(uint8_t *shared, int in, int out)
{
    uint64_t page;
    while (read(in, &page, sizeof page) == sizeof page) {
        shared[page * PAGE + 7] ^= 0x5a;
        reply(out, 0);
    }
    _exit(0);
}

static uint64_t shared_fork(uint64_t pages)
{
    int mfd = memfd_create("ms-test", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, (off_t)(pages * PAGE)) < 0)
        _exit(5);
    uint8_t *sh = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (sh == MAP_FAILED)
        _exit(5);
    memset(sh, 0x11, pages * PAGE);
    int p1[2], p2[2];
    if (pipe(p1) < 0 || pipe(p2) < 0)
        _exit(5);
    if (fork() == 0) {
        close(p1[1]);
        close(p2[0]);
        grandchild_loop(sh, p1[0], p2[1]);
    }
    close(p1[0]);
    close(p2[1]);
    g_gc_to = p1[1];
    g_gc_from = p2[0];
    return (uint64_t)(uintptr_t)sh;
}

static uint64_t spin(uint64_t ms)
{
    uint64_t end = now_ns() + ms * 1000000ull, x = 12345, n = 0;
    while (now_ns() < end)
        for (int i = 0; i < 64; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t *w = (uint64_t *)(g_region + ((x >> 33) % REGION_PAGES) * PAGE) + (x >> 20) % 512;
            *w = ++n;
        }
    return n;
}

/* Write each page exactly once, evenly over `ms`: a report lost by the
 * tracker cannot be hidden by a later write of the same page. */
static uint64_t sweep(uint64_t ms, uint64_t tag)
{
    uint64_t t0 = now_ns();
    for (uint64_t p = 0; p < REGION_PAGES; p++) {
        uint64_t due = t0 + ms * 1000000ull * p / REGION_PAGES;
        while (now_ns() < due)
            ;
        ((volatile uint64_t *)(g_region + p * PAGE))[p % 512] = tag + p;
    }
    return REGION_PAGES;
}

static uint64_t run_cmd(const cmd *c, const uint64_t *list)
{
    volatile uint64_t sum = 0;
    switch (c->op) {
    case C_WRITE:
        for (uint32_t i = 0; i < c->n; i++)
            g_region[list[i] * PAGE + (list[i] * 8) % PAGE] += 1;
        return 0;
    case C_READ:
        for (uint32_t i = 0; i < c->n; i++)
            sum += g_region[list[i] * PAGE + 100];
        return sum & 0;
    case C_MMAP: {
        uint8_t *p = mmap(NULL, c->a * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return 0;
        madvise(p, c->a * PAGE, MADV_NOHUGEPAGE);
        for (uint64_t i = 0; i < c->a; i++)
            memset(p + i * PAGE, (int)(i + 1), 64);
        return (uint64_t)(uintptr_t)p;
    }
    case C_REMAP: {
        uint8_t *at = g_region + c->a * PAGE;
        void *p = mmap(at, c->b * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p != at)
            return 1;
        memset(at, 0x77, 16);
        return 0;
    }
    case C_UNMAP:
        return (uint64_t)munmap((void *)(uintptr_t)c->a, c->b * PAGE);
    case C_SPIN:
        return spin(c->a);
    case C_SWEEP:
        return sweep(c->a, c->b);
    case C_EXIT:
        _exit(0);
    case C_SHARED_FORK:
        return shared_fork(c->a);
    case C_GC_WRITE: {
        uint64_t ack;
        reply(g_gc_to, c->a);
        full_read(g_gc_from, &ack, sizeof ack);
        return 0;
    }
    }
    return 0;
}

static void child_loop(int in, int out)
{
    g_region = mmap(NULL, REGION_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_region == MAP_FAILED)
        _exit(2);
    madvise(g_region, REGION_PAGES * PAGE, MADV_NOHUGEPAGE);
    memset(g_region, 0x33, REGION_PAGES / 2 * PAGE); /* half populated, half never touched */
    reply(out, (uint64_t)(uintptr_t)g_region);
    for (;;) {
        cmd c;
        full_read(in, &c, sizeof c);
        uint64_t *list = c.n ? malloc(c.n * sizeof *list) : NULL;
        if (c.n)
            full_read(in, list, c.n * sizeof *list);
        uint64_t r = run_cmd(&c, list);
        free(list);
        reply(out, r);
    }
}


int main(void)
{
    child_loop(3, 4);
}
