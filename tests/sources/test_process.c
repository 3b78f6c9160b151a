/* process source on child processes that write exactly known pages. Needs
 * root and Linux >= 6.7 (userfaultfd WP_ASYNC, PAGEMAP_SCAN); skips
 * otherwise. */
#include "tests/sources/proc_helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "tests/sources/child_proto.h"

/* ---------------------------------------------------------------- parent */

static child start_child(void)
{
    int a[2], b[2];
    child c = {-1, -1, -1, 0};
    const char *path = getenv("MIGSTREAM_TEST_CHILD");
    if (!path || pipe2(a, O_CLOEXEC) < 0 || pipe2(b, O_CLOEXEC) < 0)
        return c;
    c.pid = fork();
    if (c.pid == 0) {
        /* Through fds >= 10 so that dup2 never meets itself (which would
         * leave close-on-exec set). */
        int in = fcntl(a[0], F_DUPFD, 10), out = fcntl(b[1], F_DUPFD, 10);
        dup2(in, 3);
        dup2(out, 4);
        execl(path, "test_sources_child", (char *)NULL);
        _exit(127);
    }
    close(a[0]);
    close(b[1]);
    c.to = a[1];
    c.from = b[0];
    uint64_t addr = 0;
    struct pollfd pf = {.fd = c.from, .events = POLLIN};
    if (poll(&pf, 1, 10000) == 1 && read(c.from, &addr, sizeof addr) == sizeof addr)
        c.region = addr;
    return c;
}

static int send_cmd(child *c, uint32_t op, uint64_t a, uint64_t b, const uint64_t *list, uint32_t n, uint64_t *res)
{
    cmd m = {op, n, a, b};
    if (write(c->to, &m, sizeof m) != sizeof m)
        return -1;
    if (n && write(c->to, list, n * sizeof *list) != (ssize_t)(n * sizeof *list))
        return -1;
    uint64_t r;
    struct pollfd pf = {.fd = c->from, .events = POLLIN};
    if (poll(&pf, 1, 20000) != 1 || read(c->from, &r, sizeof r) != sizeof r)
        return -1;
    if (res)
        *res = r;
    return 0;
}

static void stop_child(child *c)
{
    if (c->pid <= 0)
        return;
    kill(c->pid, SIGKILL);
    waitpid(c->pid, NULL, 0);
    close(c->to);
    close(c->from);
    c->pid = -1;
}

/* Slot of the page at `addr` in process `pid`, from the range table. */
static int64_t slot_of(ms_page_source *s, int pid, uint64_t addr)
{
    ms_process_range *r;
    size_t n;
    int64_t slot = -1;
    if (ms_process_source_ranges(s, &r, &n))
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((r[i].pid == pid || pid == 0) && addr >= r[i].addr && addr < r[i].addr + r[i].npages * MS_PAGE_SIZE)
            slot = (int64_t)(r[i].first_page + (addr - r[i].addr) / MS_PAGE_SIZE);
    free(r);
    return slot;
}

static void test_exact_dirty_sets(void)
{
    child c = start_child();
    CU_ASSERT_FATAL(c.pid > 0 && c.region != 0);
    ms_addr_range range = {c.region, c.region + REGION_PAGES * MS_PAGE_SIZE};
    ms_process_opts o = {.ranges = &range, .nranges = 1};
    ms_page_source *s = NULL;
    int rc = ms_process_source_attach(c.pid, &o, &s);
    if (rc)
        fprintf(stderr, "attach: %s\n", ms_last_error());
    CU_ASSERT_FATAL(rc == MS_OK);
    CU_ASSERT_EQUAL(s->npages, REGION_PAGES);
    CU_ASSERT_EQUAL(slot_of(s, c.pid, c.region), 0);
    CU_ASSERT_EQUAL(ms_source_start(s), MS_OK);

    uint64_t *bm = calloc(ms_bitmap_words(REGION_PAGES), 8);
    uint64_t *want = calloc(ms_bitmap_words(REGION_PAGES), 8);
    uint64_t list[REGION_PAGES];
    uint64_t rng = 99;
    uint64_t missing = 0, extra = 0;
    /* Rounds: nothing, one page, a random tenth, half, everything, and
     * reads only (never reported). Populated and untouched pages mixed. */
    const uint32_t sizes[] = {0, 1, REGION_PAGES / 10, REGION_PAGES / 2, REGION_PAGES, 0};
    for (int round = 0; round < 6; round++) {
        memset(want, 0, ms_bitmap_words(REGION_PAGES) * 8);
        uint32_t n = 0;
        for (uint32_t k = 0; k < sizes[round]; k++) {
            uint64_t p = sizes[round] == REGION_PAGES ? k : (rng = rng * 6364136223846793005ull + 1) >> 33 & (REGION_PAGES - 1);
            if (!ms_bit_test(want, p)) {
                ms_bit_set(want, p);
                list[n++] = p;
            }
        }
        CU_ASSERT_EQUAL(send_cmd(&c, round == 5 ? C_READ : C_WRITE, 0, 0, list, n, NULL), 0);
        if (round == 5) { /* the reads: nothing must show */
            for (uint32_t i = 0; i < REGION_PAGES; i++)
                list[i] = i;
            CU_ASSERT_EQUAL(send_cmd(&c, C_READ, 0, 0, list, REGION_PAGES, NULL), 0);
            memset(want, 0, ms_bitmap_words(REGION_PAGES) * 8);
        }
        memset(bm, 0, ms_bitmap_words(REGION_PAGES) * 8);
        CU_ASSERT_EQUAL(ms_source_dirty(s, bm), MS_OK);
        for (uint64_t p = 0; p < REGION_PAGES; p++) {
            missing += ms_bit_test(want, p) && !ms_bit_test(bm, p);
            extra += !ms_bit_test(want, p) && ms_bit_test(bm, p);
        }
        printf("  round %d: wrote %u pages, reported %llu\n", round, n,
               (unsigned long long)ms_bitmap_count(bm, REGION_PAGES));
    }
    CU_ASSERT_EQUAL(missing, 0);
    CU_ASSERT_EQUAL(extra, 0);
    /* The content read back is the child's. */
    uint8_t page[MS_PAGE_SIZE];
    uint64_t idx = 3;
    CU_ASSERT_EQUAL(ms_source_read(s, &idx, 1, page), MS_OK);
    CU_ASSERT_EQUAL(page[100], 0x33);
    free(bm);
    free(want);
    ms_source_destroy(s);
    stop_child(&c);
}

static void test_concurrent_writer_copy(void)
{
    child c = start_child();
    CU_ASSERT_FATAL(c.pid > 0);
    ms_page_source *s = NULL;
    int rc = ms_process_source_attach(c.pid, NULL, &s); /* every writable mapping */
    if (rc)
        fprintf(stderr, "attach: %s\n", ms_last_error());
    CU_ASSERT_FATAL(rc == MS_OK);
    mirror m;
    CU_ASSERT_FATAL(mirror_start(&m, s) == MS_OK);
    /* The child writes flat out for 3 s; we copy rounds meanwhile. */
    cmd sp = {C_SPIN, 0, 3000, 0};
    CU_ASSERT_FATAL(write(c.to, &sp, sizeof sp) == sizeof sp);
    for (int i = 0; i < 10; i++) {
        sleep_ms(50);
        rc = mirror_round(&m);
        CU_ASSERT_EQUAL(rc, MS_OK);
    }
    CU_ASSERT(m.total_dirty > 0);
    mirror_final_check(&m); /* pauses mid-spin */
    CU_ASSERT_EQUAL(ms_source_resume(s), MS_OK);
    uint64_t writes = 0;
    CU_ASSERT_EQUAL(read(c.from, &writes, sizeof writes), sizeof writes);
    printf("  child wrote %llu words during the rounds\n", (unsigned long long)writes);
    CU_ASSERT(writes > 10000);
    /* Then every page written exactly once, spread over 600 ms, with rounds
     * every 10 ms: one lost report would leave a page stale. Three times. */
    for (int sweep = 0; sweep < 3; sweep++) {
        cmd sw = {C_SWEEP, 0, 600, 1000000ull * (sweep + 1)};
        CU_ASSERT_FATAL(write(c.to, &sw, sizeof sw) == sizeof sw);
        uint64_t seen = 0;
        struct pollfd pf = {.fd = c.from, .events = POLLIN};
        while (poll(&pf, 1, 10) == 0) {
            CU_ASSERT_EQUAL(mirror_round(&m), MS_OK);
            seen += m.last_dirty;
        }
        CU_ASSERT_EQUAL(read(c.from, &writes, sizeof writes), sizeof writes);
        printf("  sweep %d: %llu pages reported over %d rounds\n", sweep, (unsigned long long)seen, m.rounds);
        mirror_final_check(&m);
        CU_ASSERT_EQUAL(ms_source_resume(s), MS_OK);
    }
    mirror_free(&m);
    ms_source_destroy(s);
    stop_child(&c);
}

static void test_new_mappings(void)
{
    child c = start_child();
    CU_ASSERT_FATAL(c.pid > 0);
    ms_process_opts o = {.max_pages = 1u << 20};
    ms_page_source *s = NULL;
    int rc = ms_process_source_attach(c.pid, &o, &s);
    CU_ASSERT_FATAL(rc == MS_OK);
    /* Memory that appears between construction and start(): numbered by
     * start(), and reported again by the first dirty(). */
    uint64_t at_build = s->npages, early = 0;
    CU_ASSERT_EQUAL(send_cmd(&c, C_MMAP, 64, 0, NULL, 0, &early), 0);
    mirror m;
    CU_ASSERT_FATAL(mirror_start(&m, s) == MS_OK);
    CU_ASSERT(s->npages >= at_build + 64);
    CU_ASSERT_EQUAL(mirror_round(&m), MS_OK);
    int64_t eslot = slot_of(s, c.pid, early);
    CU_ASSERT(eslot >= (int64_t)at_build && ms_bit_test(m.bm, (uint64_t)eslot) &&
              ms_bit_test(m.bm, (uint64_t)eslot + 63));
    uint64_t before = s->npages;

    /* A new mapping mid-tracking: all of it reported, numbering grows. */
    uint64_t addr = 0;
    CU_ASSERT_EQUAL(send_cmd(&c, C_MMAP, 2048, 0, NULL, 0, &addr), 0);
    CU_ASSERT_FATAL(addr != 0);
    CU_ASSERT_EQUAL(mirror_round(&m), MS_OK);
    int64_t slot = slot_of(s, c.pid, addr);
    CU_ASSERT(slot >= 0);
    CU_ASSERT(s->npages >= before + 2048);
    CU_ASSERT(m.last_dirty >= 2048);
    bool all = slot >= 0;
    for (int64_t p = slot; all && p < slot + 2048; p++)
        all = ms_bit_test(m.bm, (uint64_t)p);
    CU_ASSERT(all);
    /* From now on it is tracked exactly like the rest. */
    uint64_t list[3] = {0, 7, 1000};
    CU_ASSERT_EQUAL(send_cmd(&c, C_WRITE, 0, 0, list, 3, NULL), 0);
    CU_ASSERT_EQUAL(mirror_round(&m), MS_OK);
    int64_t r0 = slot_of(s, c.pid, c.region);
    CU_ASSERT(r0 >= 0 && ms_bit_test(m.bm, (uint64_t)r0 + 7) && ms_bit_test(m.bm, (uint64_t)r0 + 1000));
    CU_ASSERT(slot < 0 || !ms_bit_test(m.bm, (uint64_t)slot + 5));

    /* MAP_FIXED over part of the region: the scan fails with EPERM and the
     * range is resent; munmap frees slots (reported, read as zeros). */
    ms_process_stats st0, st1;
    ms_process_source_stats(s, &st0);
    CU_ASSERT_EQUAL(send_cmd(&c, C_REMAP, 100, 16, NULL, 0, NULL), 0);
    CU_ASSERT_EQUAL(send_cmd(&c, C_UNMAP, addr, 1024, NULL, 0, NULL), 0);
    CU_ASSERT_EQUAL(mirror_round(&m), MS_OK);
    ms_process_source_stats(s, &st1);
    CU_ASSERT(r0 >= 0 && ms_bit_test(m.bm, (uint64_t)r0 + 100) && ms_bit_test(m.bm, (uint64_t)r0 + 115));
    CU_ASSERT(slot >= 0 && ms_bit_test(m.bm, (uint64_t)slot) && ms_bit_test(m.bm, (uint64_t)slot + 1023));
    CU_ASSERT(st1.freed_pages >= st0.freed_pages + 1024);
    printf("  scan errors %llu, new spans %llu, freed pages %llu\n", (unsigned long long)st1.scan_errors,
           (unsigned long long)st1.new_spans, (unsigned long long)st1.freed_pages);
    /* Writes after all that are still exact. */
    CU_ASSERT_EQUAL(send_cmd(&c, C_WRITE, 0, 0, list, 3, NULL), 0);
    CU_ASSERT_EQUAL(mirror_round(&m), MS_OK);
    CU_ASSERT(r0 >= 0 && ms_bit_test(m.bm, (uint64_t)r0));
    mirror_final_check(&m);
    ms_source_resume(s);
    mirror_free(&m);
    ms_source_destroy(s);
    stop_child(&c);
}

static void test_fixed_bound(void)
{
    child c = start_child();
    CU_ASSERT_FATAL(c.pid > 0);
    ms_page_source *s = NULL;
    CU_ASSERT_FATAL(ms_process_source_attach(c.pid, NULL, &s) == MS_OK);
    uint64_t *bm = calloc(ms_bitmap_words(ms_source_max_pages(s)), 8);
    CU_ASSERT_EQUAL(ms_source_max_pages(s), s->npages);
    CU_ASSERT_EQUAL(ms_source_start(s), MS_OK);
    uint64_t addr = 0;
    CU_ASSERT_EQUAL(send_cmd(&c, C_MMAP, s->npages + 100, 0, NULL, 0, &addr), 0);
    int rc = ms_source_dirty(s, bm);
    printf("  %s\n", ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_ERR_LIMIT);
    CU_ASSERT(strstr(ms_last_error(), "max_pages") != NULL);
    free(bm);
    ms_source_destroy(s);
    stop_child(&c);
}

static void test_exit_mid_tracking(void)
{
    child c = start_child();
    CU_ASSERT_FATAL(c.pid > 0);
    ms_page_source *s = NULL;
    CU_ASSERT_FATAL(ms_process_source_attach(c.pid, NULL, &s) == MS_OK);
    mirror m;
    CU_ASSERT_FATAL(mirror_start(&m, s) == MS_OK);
    CU_ASSERT_EQUAL(mirror_round(&m), MS_OK);
    cmd ex = {C_EXIT, 0, 0, 0};
    CU_ASSERT(write(c.to, &ex, sizeof ex) == sizeof ex);
    waitpid(c.pid, NULL, 0); /* ours to reap: a fork of this test */
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "%d", c.pid);
    int rc = mirror_round(&m);
    printf("  dirty: %s\n", ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_ERR_CLOSED);
    CU_ASSERT(strstr(ms_last_error(), pidstr) != NULL);
    uint64_t idx = 0;
    uint8_t page[MS_PAGE_SIZE];
    CU_ASSERT_EQUAL(ms_source_read(s, &idx, 1, page), MS_ERR_CLOSED);
    CU_ASSERT_EQUAL(ms_source_pause(s), MS_ERR_CLOSED);
    CU_ASSERT_EQUAL(ms_source_dirty(s, m.bm), MS_ERR_CLOSED);
    mirror_free(&m);
    ms_source_destroy(s);
    c.pid = -1;
    close(c.to);
    close(c.from);
}

static void test_shared_memfd_tree(void)
{
    child c = start_child();
    CU_ASSERT_FATAL(c.pid > 0);
    uint64_t sh = 0;
    CU_ASSERT_EQUAL(send_cmd(&c, C_SHARED_FORK, 64, 0, NULL, 0, &sh), 0);
    CU_ASSERT_FATAL(sh != 0);
    ms_process_opts o = {.flags = MS_PROC_CHILDREN, .max_pages = 1u << 20};
    ms_page_source *s = NULL;
    int rc = ms_process_source_attach(c.pid, &o, &s);
    if (rc)
        fprintf(stderr, "attach: %s\n", ms_last_error());
    CU_ASSERT_FATAL(rc == MS_OK);
    ms_process_stats st;
    ms_process_source_stats(s, &st);
    CU_ASSERT_EQUAL(st.processes, 2);
    /* The memfd is mapped by both processes but numbered once. */
    ms_process_range *r;
    size_t n, shared_pages = 0;
    CU_ASSERT_FATAL(ms_process_source_ranges(s, &r, &n) == MS_OK);
    for (size_t i = 0; i < n; i++)
        shared_pages += r[i].shared ? r[i].npages : 0;
    free(r);
    CU_ASSERT_EQUAL(shared_pages, 64);
    mirror m;
    CU_ASSERT_FATAL(mirror_start(&m, s) == MS_OK);
    CU_ASSERT_EQUAL(mirror_round(&m), MS_OK);
    /* A write by the grandchild through its own mapping. */
    CU_ASSERT_EQUAL(send_cmd(&c, C_GC_WRITE, 9, 0, NULL, 0, NULL), 0);
    CU_ASSERT_EQUAL(mirror_round(&m), MS_OK);
    int64_t slot = slot_of(s, 0, sh + 9 * MS_PAGE_SIZE);
    if (slot < 0) { /* numbered through the other mapper's address */
        ms_process_source_ranges(s, &r, &n);
        for (size_t i = 0; i < n; i++)
            if (r[i].shared)
                slot = (int64_t)r[i].first_page + 9;
        free(r);
    }
    CU_ASSERT(slot >= 0 && ms_bit_test(m.bm, (uint64_t)slot));
    CU_ASSERT(slot >= 0 && m.copy[(uint64_t)slot * MS_PAGE_SIZE + 7] == (0x11 ^ 0x5a));
    mirror_final_check(&m);
    ms_source_resume(s);
    mirror_free(&m);
    ms_source_destroy(s);
    stop_child(&c); /* the grandchild sees EOF and exits */
}

static void test_bad_attach(void)
{
    ms_page_source *s = NULL;
    CU_ASSERT_EQUAL(ms_process_source_attach(getpid(), NULL, &s), MS_ERR_INVAL);
    CU_ASSERT_EQUAL(ms_process_source_attach(0x3ffffff, NULL, &s), MS_ERR_CLOSED);
    printf("  %s\n", ms_last_error());
    CU_ASSERT(s == NULL);
    child c = start_child();
    ms_addr_range bad = {0x1000, 0x3000};
    ms_process_opts o = {.ranges = &bad, .nranges = 1};
    CU_ASSERT_EQUAL(ms_process_source_attach(c.pid, &o, &s), MS_ERR_INVAL);
    printf("  %s\n", ms_last_error());
    stop_child(&c);
}

int main(void)
{
    require_process_tracking();
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    static const ms_test_case cases[] = {
        {"exact dirty sets (0 missing, 0 extra)", test_exact_dirty_sets},
        {"concurrent writer, byte-identical copy at pause", test_concurrent_writer_copy},
        {"new, replaced and unmapped mappings mid-tracking", test_new_mappings},
        {"fixed page bound refuses growth clearly", test_fixed_bound},
        {"process exit mid-tracking is an error, not a crash", test_exit_mid_tracking},
        {"shared memfd across a process tree numbered once", test_shared_memfd_tree},
        {"bad attach requests", test_bad_attach},
        {NULL, NULL},
    };
    add_cases_filtered("sources/process", cases);
    return ms_test_run_all();
}
