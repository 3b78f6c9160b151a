/* process source on real programs: migstream-dirtier attached by pid and
 * spawned under the uffd preload, a command that execs, and stress-ng (a
 * third-party workload, whose memory churns through munmap/mmap). Each ends
 * with a stop-and-copy whose copy must equal the source byte for byte.
 * Needs root and Linux >= 6.7; skips otherwise. */
#include "tests/sources/proc_helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>

static const char *dirtier_path(void)
{
    const char *p = getenv("MIGSTREAM_DIRTIER");
    return p && *p ? p : "migstream-dirtier";
}

/* Start the dirtier with its stdout on a pipe; wait for its ready line. */
static pid_t start_dirtier(const char *size, const char *rate, int *out_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        execl(dirtier_path(), "migstream-dirtier", "--size", size, "--rate", rate, "--duration", "120",
              "--counter", "0.2", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char line[256];
    size_t n = 0;
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    while (n < sizeof line - 1 && poll(&pf, 1, 20000) == 1 && read(p[0], line + n, 1) == 1) {
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = 0;
    if (strncmp(line, "ready", 5)) {
        fprintf(stderr, "dirtier did not get ready: '%s'\n", line);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(p[0]);
        return -1;
    }
    *out_fd = p[0];
    return pid;
}

/* Run argv under the uffd preload, with room for max_mib MiB. */
static ms_page_source *spawn_tracked(char *const argv[], unsigned max_mib)
{
    ms_process_opts o = {.max_pages = ((uint64_t)max_mib << 20) / MS_PAGE_SIZE, .output = "/dev/null"};
    ms_page_source *s = NULL;
    int rc = ms_process_source_spawn(argv, &o, &s);
    if (rc)
        fprintf(stderr, "spawn: %s\n", ms_last_error());
    CU_ASSERT_FATAL(rc == MS_OK);
    return s;
}

/* Copy round `n` after gap_ms, which must succeed; shows how much was dirty. */
static void copy_round(mirror *m, int n, unsigned gap_ms)
{
    sleep_ms(gap_ms);
    int rc = mirror_round(m);
    if (rc)
        fprintf(stderr, "round %d: %s\n", n, ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_OK);
    printf("    round %d: %llu dirty of %llu pages\n", n, (unsigned long long)m->last_dirty,
           (unsigned long long)m->npages);
}

/* Copy rounds 100 ms apart (at most `tries`) until the source tracks at
 * least `pages` pages: a started program builds its memory first. */
static void wait_tracked(mirror *m, ms_page_source *s, uint64_t pages, int tries, ms_process_stats *st)
{
    memset(st, 0, sizeof *st);
    for (int i = 0; i < tries && st->tracked_pages < pages; i++) {
        sleep_ms(100);
        int rc = mirror_round(m);
        if (rc)
            fprintf(stderr, "round: %s\n", ms_last_error());
        CU_ASSERT_EQUAL(rc, MS_OK);
        ms_process_source_stats(s, st);
    }
}

/* Copy while it runs, then stop-and-copy and compare. */
static void migrate_rounds(ms_page_source *s, int rounds, unsigned gap_ms)
{
    mirror m;
    int rc = mirror_start(&m, s);
    CU_ASSERT_FATAL(rc == MS_OK);
    for (int i = 0; i < rounds; i++)
        copy_round(&m, i + 1, gap_ms);
    CU_ASSERT(m.total_dirty > 0);
    mirror_final_check(&m);
    CU_ASSERT_EQUAL(ms_source_resume(s), MS_OK);
    mirror_free(&m);
}

/* The counter on the dirtier's stdout moves on: it is running. */
static bool still_counting(int fd)
{
    char buf[4096];
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    size_t total = 0;
    uint64_t end = ms_now_ns() + 2000000000ull;
    while (ms_now_ns() < end && poll(&pf, 1, 500) == 1) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        total += (size_t)n;
        if (total > 40)
            return true;
    }
    return false;
}

static void test_attach_dirtier(void)
{
    int out = -1;
    pid_t pid = start_dirtier("64M", "20000", &out);
    CU_ASSERT_FATAL(pid > 0);
    ms_page_source *s = NULL;
    int rc = ms_process_source_attach(pid, NULL, &s);
    if (rc)
        fprintf(stderr, "attach: %s\n", ms_last_error());
    CU_ASSERT_FATAL(rc == MS_OK);
    CU_ASSERT(s->npages >= (64u << 20) / MS_PAGE_SIZE);
    ms_process_stats st;
    ms_process_source_stats(s, &st);
    CU_ASSERT_STRING_EQUAL(st.method, "inject");
    migrate_rounds(s, 5, 100);
    ms_source_destroy(s); /* detach: the workload goes on untracked */
    CU_ASSERT(kill(pid, 0) == 0);
    CU_ASSERT(still_counting(out));
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(out);
}

static void test_spawn_dirtier(void)
{
    char *argv[] = {(char *)dirtier_path(), "--size", "64M", "--rate", "50000", "--duration", "120", "-q", NULL};
    ms_page_source *s = spawn_tracked(argv, 256);
    int pid = ms_process_source_pid(s);
    /* Its memory appears after start; wait until it is filled. */
    mirror m;
    CU_ASSERT_FATAL(mirror_start(&m, s) == MS_OK);
    for (int i = 0; i < 50 && m.npages < (64u << 20) / MS_PAGE_SIZE; i++) {
        sleep_ms(100);
        CU_ASSERT_EQUAL(mirror_round(&m), MS_OK);
    }
    mirror_free(&m);
    ms_process_stats st;
    ms_process_source_stats(s, &st);
    CU_ASSERT_STRING_EQUAL(st.method, "preload");
    CU_ASSERT(s->npages >= (64u << 20) / MS_PAGE_SIZE);
    migrate_rounds(s, 5, 100);
    ms_source_destroy(s); /* ends the command */
    CU_ASSERT(kill(pid, 0) < 0 && errno == ESRCH);
}

/* Gone, or a zombie about to be reaped. */
static bool dead(int pid)
{
    for (int i = 0; i < 100; i++) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            return true;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *rp = strrchr(buf, ')');
        if (rp && (rp[2] == 'Z' || rp[2] == 'X'))
            return true;
        sleep_ms(20);
    }
    return false;
}

/* sh execs the dirtier: same pid, new mm, a second preload report. */
static void test_spawn_exec(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "exec %s --size 16M --rate 20000 --duration 120 -q", dirtier_path());
    char *argv[] = {"sh", "-c", cmd, NULL};
    ms_page_source *s = spawn_tracked(argv, 128);
    mirror m;
    CU_ASSERT_FATAL(mirror_start(&m, s) == MS_OK);
    ms_process_stats st;
    wait_tracked(&m, s, (16u << 20) / MS_PAGE_SIZE, 50, &st);
    CU_ASSERT(st.tracked_pages >= (16u << 20) / MS_PAGE_SIZE);
    for (int i = 0; i < 4; i++) {
        copy_round(&m, i + 1, 100);
        CU_ASSERT(m.last_dirty > 0); /* the exec'd program is tracked, and writing */
    }
    ms_process_source_stats(s, &st);
    printf("  method %s, %llu pages tracked\n", st.method, (unsigned long long)st.tracked_pages);
    mirror_final_check(&m);
    ms_source_resume(s);
    mirror_free(&m);
    ms_source_destroy(s);
}

static void test_stress_ng(void)
{
    const char *sng = "/usr/bin/stress-ng";
    if (access(sng, X_OK) != 0) {
        printf("  SKIP: %s is not installed (apt-get install stress-ng)\n", sng);
        return;
    }
    char *argv[] = {(char *)sng, "--vm", "1", "--vm-bytes", "64M", "-t", "60", NULL};
    ms_page_source *s = spawn_tracked(argv, 1024);
    mirror m;
    CU_ASSERT_FATAL(mirror_start(&m, s) == MS_OK);
    ms_process_stats st;
    /* Wait for the worker (a grandchild) and its 64 MiB. */
    wait_tracked(&m, s, (64u << 20) / MS_PAGE_SIZE, 100, &st);
    printf("  %llu processes, %llu pages tracked (%s)\n", (unsigned long long)st.processes,
           (unsigned long long)st.tracked_pages, st.method);
    CU_ASSERT(st.processes >= 2);
    CU_ASSERT(st.tracked_pages >= (64u << 20) / MS_PAGE_SIZE);
    for (int i = 0; i < 6; i++)
        copy_round(&m, i + 1, 200);
    CU_ASSERT(m.total_dirty > (64u << 20) / MS_PAGE_SIZE);
    mirror_final_check(&m);
    ms_process_source_stats(s, &st);
    printf("  scans %llu, scan errors %llu, new spans %llu, freed %llu pages, untracked %llu pages\n",
           (unsigned long long)st.scans, (unsigned long long)st.scan_errors, (unsigned long long)st.new_spans,
           (unsigned long long)st.freed_pages, (unsigned long long)st.untracked_pages);
    ms_process_range *r;
    size_t n;
    int pids[16], np = 0;
    if (ms_process_source_ranges(s, &r, &n) == MS_OK) {
        for (size_t i = 0; i < n; i++) {
            bool seen = false;
            for (int j = 0; j < np; j++)
                seen = seen || pids[j] == r[i].pid;
            if (!seen && np < 16)
                pids[np++] = r[i].pid;
        }
        free(r);
    }
    mirror_free(&m);
    ms_source_destroy(s); /* terminates the whole tree */
    for (int j = 0; j < np; j++)
        CU_ASSERT(dead(pids[j]));
}

static pid_t run_quiet(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* redis-server (threads, its own allocator) under redis-benchmark writes. */
static void test_redis(void)
{
    if (access("/usr/bin/redis-server", X_OK) || access("/usr/bin/redis-benchmark", X_OK)) {
        printf("  SKIP: redis-server or redis-benchmark is not installed (apt-get install redis-server)\n");
        return;
    }
    char port[16];
    snprintf(port, sizeof port, "%d", 20000 + getpid() % 10000);
    char *argv[] = {"/usr/bin/redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "no", NULL};
    ms_page_source *s = spawn_tracked(argv, 2048);
    sleep_ms(300); /* listening */
    char *bench[] = {"redis-benchmark", "-p", port, "-t", "set,lpush", "-n", "3000000", "-d", "512", "-r", "200000",
                     "-q", NULL};
    pid_t b = run_quiet(bench);
    mirror m;
    CU_ASSERT_FATAL(mirror_start(&m, s) == MS_OK);
    for (int i = 0; i < 10; i++)
        copy_round(&m, i + 1, 200);
    CU_ASSERT(m.total_dirty > 1000);
    mirror_final_check(&m);
    ms_process_stats st;
    ms_process_source_stats(s, &st);
    printf("  %llu process(es), %llu pages tracked, scan errors %llu, new spans %llu\n",
           (unsigned long long)st.processes, (unsigned long long)st.tracked_pages,
           (unsigned long long)st.scan_errors, (unsigned long long)st.new_spans);
    CU_ASSERT_EQUAL(ms_source_resume(s), MS_OK);
    mirror_free(&m);
    kill(b, SIGKILL);
    waitpid(b, NULL, 0);
    ms_source_destroy(s);
}

static void test_spawn_errors(void)
{
    char *argv[] = {"/nonexistent/program", NULL};
    ms_page_source *s = NULL;
    CU_ASSERT_EQUAL(ms_process_source_spawn(argv, NULL, &s), MS_ERR_INVAL);
    printf("  %s\n", ms_last_error());
    CU_ASSERT(strstr(ms_last_error(), "No such file") != NULL);
    char *quick[] = {"true", NULL};
    int rc = ms_process_source_spawn(quick, NULL, &s);
    printf("  %s\n", ms_last_error());
    CU_ASSERT(rc == MS_ERR_CLOSED || rc == MS_OK);
    ms_source_destroy(s);
    char *bad_preload[] = {"sleep", "5", NULL};
    ms_process_opts o = {.preload = "/nonexistent/libmigstream-uffd.so"};
    CU_ASSERT_EQUAL(ms_process_source_spawn(bad_preload, &o, &s), MS_ERR_INVAL);
    printf("  %s\n", ms_last_error());
}

int main(void)
{
    require_process_tracking();
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    static const ms_test_case cases[] = {
        {"attach to a running migstream-dirtier", test_attach_dirtier},
        {"spawn migstream-dirtier under the uffd preload", test_spawn_dirtier},
        {"spawned shell that execs the workload", test_spawn_exec},
        {"stress-ng --vm 1 --vm-bytes 64M, byte-identical at pause", test_stress_ng},
        {"redis-server under redis-benchmark, byte-identical at pause", test_redis},
        {"spawn errors", test_spawn_errors},
        {NULL, NULL},
    };
    add_cases_filtered("sources/live", cases);
    return ms_test_run_all();
}
