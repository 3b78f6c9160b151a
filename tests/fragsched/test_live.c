/* Live migration of real processes: our migstream-dirtier and Debian's
 * stress-ng, tracked with userfaultfd write-protect + PAGEMAP_SCAN, moved
 * over loopback TCP with zero,delta,lz4 and verified page for page against
 * the source at the pause. Exit 77 (skip) with the reason where this kernel
 * or these privileges cannot track a process. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fragsched/fragsched.h"
#include "tests/ms_test.h"

#ifndef MS_DIRTIER
#define MS_DIRTIER "migstream-dirtier"
#endif

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static bool wait_for_text(const char *path, const char *text, int seconds)
{
    char buf[4096];
    for (int i = 0; i < seconds * 50; i++) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = 0;
        if (strstr(buf, text))
            return true;
        sleep_ms(20);
    }
    return false;
}

static bool have_program(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

/* Start argv under tracking, wait until it is ready, migrate with `policy`,
 * check the report. */
static void migrate_command(char *const argv[], const char *ready, long warmup_ms,
                            const char *policy, const char *chain)
{
    char out[] = "/tmp/ms-live-XXXXXX";
    int fd = mkstemp(out);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    ms_process_opts po = {.max_pages = (4ull << 30) / 4096, .output = out};
    ms_page_source *src = NULL;
    int rc = ms_process_source_spawn(argv, &po, &src);
    if (rc)
        fprintf(stderr, "spawn %s: %s\n", argv[0], ms_last_error());
    CU_ASSERT_EQUAL_FATAL(rc, MS_OK);
    if (ready)
        CU_ASSERT(wait_for_text(out, ready, 60));
    sleep_ms(warmup_ms);

    ms_engine_config cfg;
    ms_engine_config_default(&cfg);
    cfg.policy = policy;
    cfg.session.workers = 2;
    cfg.policy_cfg.max_rounds = 10; /* flat-out writers never converge */
    CU_ASSERT_EQUAL_FATAL(ms_chain_parse(chain, &cfg.session.chain), MS_OK);
    ms_migration_report rep;
    memset(&rep, 0, sizeof(rep));
    rc = ms_migrate(src, &cfg, &rep);
    if (rc)
        fprintf(stderr, "%s, %s: %s\n", argv[0], policy, ms_last_error());
    CU_ASSERT_EQUAL(rc, MS_OK);
    CU_ASSERT(rep.verify_done);
    CU_ASSERT(rep.verified);
    CU_ASSERT_EQUAL(rep.verify_mismatches, 0);
    CU_ASSERT(rep.npages > 1000);
    CU_ASSERT(rep.pages_sent >= rep.npages);
    CU_ASSERT(rep.wire_bytes > 0);
    fprintf(stderr, "\n%s (%s, %s): %.1f MiB, %u live rounds, total %.3f s, downtime %.1f ms, "
            "%.1f MiB on the wire, verified %s\n", argv[0], policy, chain,
            rep.npages * 4096.0 / 1048576.0, rep.live_rounds, rep.total_s, rep.downtime_s * 1000,
            rep.wire_bytes / 1048576.0, rep.verified ? "yes" : "NO");
    ms_report_free(&rep);
    ms_source_destroy(src);
    unlink(out);
}

/* An AddressSanitizer build of the dirtier maps terabytes of writable
 * shadow memory, which no tracker should try to migrate: those cases need
 * a build without sanitizers (stress-ng, a Debian binary, still runs). */
#if defined(__SANITIZE_ADDRESS__)
#define DIRTIER_USABLE false
#else
#define DIRTIER_USABLE true
#endif

static bool dirtier_usable(void)
{
    if (!DIRTIER_USABLE)
        fprintf(stderr, "\nskipped: migstream-dirtier is built with AddressSanitizer\n");
    return DIRTIER_USABLE;
}

static void test_dirtier_fragmented(void)
{
    if (!dirtier_usable())
        return;
    char *argv[] = {MS_DIRTIER, "--size", "96M", "--rate", "50000", NULL};
    migrate_command(argv, "ready pid=", 300, "fragmented", "zero,delta,lz4");
}

static void test_dirtier_precopy(void)
{
    if (!dirtier_usable())
        return;
    char *argv[] = {MS_DIRTIER, "--size", "96M", "--rate", "50000", NULL};
    migrate_command(argv, "ready pid=", 300, "precopy", "zero,delta,lz4");
}

static void test_dirtier_downtime_flat_out(void)
{
    if (!dirtier_usable())
        return;
    char *argv[] = {MS_DIRTIER, "--size", "64M", "--rate", "0", NULL};
    migrate_command(argv, "ready pid=", 300, "downtime", "zero,lz4");
}

/* A third-party workload: stress-ng's vm stressor (a forked worker writing
 * its buffer over and over). Without --vm-keep it also unmaps and maps its
 * buffer again, so new memory appears during the migration. */
static void stress_ng(bool keep, const char *policy)
{
    if (!have_program("stress-ng")) {
        fprintf(stderr, "\nstress-ng not installed (apt-get install stress-ng)%s\n",
                getenv("CI") ? ": required in CI" : ": case skipped");
        CU_ASSERT_FALSE(getenv("CI") != NULL);
        return;
    }
    char *argv_keep[] = {"stress-ng", "--vm", "1", "--vm-bytes", "96M", "--vm-keep",
                         "--timeout", "120s", "--quiet", NULL};
    char *argv_churn[] = {"stress-ng", "--vm", "1", "--vm-bytes", "64M",
                          "--timeout", "120s", "--quiet", NULL};
    migrate_command(keep ? argv_keep : argv_churn, NULL, 1500, policy, "zero,delta,lz4");
}

static void test_stress_ng_fragmented(void) { stress_ng(true, "fragmented"); }
static void test_stress_ng_precopy(void) { stress_ng(true, "precopy"); }
static void test_stress_ng_churn(void) { stress_ng(false, "fragmented"); }

int main(void)
{
    if (ms_process_probe() != MS_OK) {
        printf("SKIP: live process migration unavailable here: %s\n", ms_last_error());
        return MS_TEST_SKIP;
    }
    if (access(MS_DIRTIER, X_OK) != 0) {
        printf("SKIP: %s is not built\n", MS_DIRTIER);
        return MS_TEST_SKIP;
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    static const ms_test_case cases[] = {
        {"migstream-dirtier, fragmented, verified", test_dirtier_fragmented},
        {"migstream-dirtier, precopy, verified", test_dirtier_precopy},
        {"migstream-dirtier flat out, downtime, verified", test_dirtier_downtime_flat_out},
        {"stress-ng --vm, fragmented, verified", test_stress_ng_fragmented},
        {"stress-ng --vm, precopy, verified", test_stress_ng_precopy},
        {"stress-ng --vm remapping its buffer, verified", test_stress_ng_churn},
        {NULL, NULL},
    };
    ms_test_add_suite("fragsched", cases);
    return ms_test_run_all();
}
