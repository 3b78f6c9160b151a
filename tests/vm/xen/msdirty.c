/* msdirty: the Xen lane's guest workload. Runs as the guest's only program
 * (built static: the guest initrd has no libc) and keeps memory changing
 * while the guest is migrated:
 *
 *   hot set    HOT_MIB rewritten every tick (one 8-byte word per page, so
 *              each resend is a small delta against the previous copy);
 *   sweep set  SWEEP_MIB of text-like data, SWEEP_PPS pages a second get a
 *              64-byte slice rewritten, walking through the set in a cycle;
 *   the rest of guest memory is left alone (mostly zero pages).
 *
 * Every PRINT_MS it prints "MSCTR <n> rt=<ms> mono=<ms> boot=<ms>" on
 * stdout (the guest console, hvc0). n counts prints since boot, so a counter
 * that goes on after a migration proves the same guest kept running; the
 * largest gap between consecutive CLOCK_REALTIME values around a migration
 * is its downtime as the guest saw it (Xen resets the guest's wall clock on
 * resume, so a paused guest sees the time it lost).
 *
 * usage: msdirty HOT_MIB SWEEP_MIB SWEEP_PPS PRINT_MS */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096u
#define TICK_MS 10

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint8_t *map_region(size_t bytes)
{
    if (bytes == 0)
        return NULL;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "msdirty: cannot map %zu bytes\n", bytes);
        exit(1);
    }
    return p;
}

/* Words from a small vocabulary with numbers mixed in: compressible like
 * real text or logs (LZ4 ~2-3x), never a zero page. */
static void fill_text(uint8_t *dst, size_t len, uint64_t *seed)
{
    static const char *words[] = {"migration ", "page ", "dirty ", "round ", "xen ", "guest ",
                                  "stream ", "frame ", "codec ", "delta ", "channel ", "bytes "};
    size_t off = 0;
    while (off < len) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        char tmp[32];
        int n;
        if ((*seed >> 60) < 3)
            n = snprintf(tmp, sizeof(tmp), "%llu ", (unsigned long long)(*seed >> 40));
        else
            n = snprintf(tmp, sizeof(tmp), "%s", words[(*seed >> 33) % 12]);
        size_t k = (size_t)n < len - off ? (size_t)n : len - off;
        memcpy(dst + off, tmp, k);
        off += k;
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: msdirty HOT_MIB SWEEP_MIB SWEEP_PPS PRINT_MS\n");
        return 2;
    }
    size_t hot_pages = strtoul(argv[1], NULL, 10) * 256;
    size_t sweep_pages = strtoul(argv[2], NULL, 10) * 256;
    uint64_t sweep_pps = strtoull(argv[3], NULL, 10);
    int64_t print_ms = strtoll(argv[4], NULL, 10);
    uint8_t *hot = map_region(hot_pages * PAGE);
    uint8_t *sweep = map_region(sweep_pages * PAGE);
    uint64_t seed = 0x6d696773747265ull;

    fill_text(hot, hot_pages * PAGE, &seed);
    fill_text(sweep, sweep_pages * PAGE, &seed);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("MSDIRTY hot=%zu sweep=%zu pps=%llu print_ms=%lld\n", hot_pages, sweep_pages,
           (unsigned long long)sweep_pps, (long long)print_ms);

    uint64_t tick = 0, counter = 0, sweep_pos = 0, sweep_credit = 0;
    int64_t last_print = clock_ms(CLOCK_MONOTONIC);
    const struct timespec pause = {0, TICK_MS * 1000000L};
    for (;;) {
        tick++;
        for (size_t i = 0; i < hot_pages; i++) {
            uint64_t *w = (uint64_t *)(hot + i * PAGE) + (tick % (PAGE / 8));
            *w = tick ^ i;
        }
        sweep_credit += sweep_pps * TICK_MS;
        while (sweep_pages && sweep_credit >= 1000) {
            sweep_credit -= 1000;
            uint8_t *p = sweep + (sweep_pos % sweep_pages) * PAGE + ((sweep_pos / sweep_pages) * 64) % PAGE;
            fill_text(p, 64, &seed);
            sweep_pos++;
        }
        int64_t now = clock_ms(CLOCK_MONOTONIC);
        if (now - last_print >= print_ms) {
            last_print = now;
            printf("MSCTR %llu rt=%lld mono=%lld boot=%lld\n", (unsigned long long)++counter,
                   (long long)clock_ms(CLOCK_REALTIME), (long long)now, (long long)clock_ms(CLOCK_BOOTTIME));
        }
        nanosleep(&pause, NULL);
    }
}
