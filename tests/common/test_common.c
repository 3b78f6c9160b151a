/* The common layer: size/rate/duration parsing (including values that do
 * not fit), ULEB128 limits, error messages. */
#include <string.h>

#include "common/common.h"
#include "tests/ms_test.h"

static void test_sizes(void)
{
    uint64_t v;
    CU_ASSERT_EQUAL(ms_parse_size("512M", &v), 0);
    CU_ASSERT_EQUAL(v, 512ull << 20);
    CU_ASSERT_EQUAL(ms_parse_size("4GiB", &v), 0);
    CU_ASSERT_EQUAL(v, 4ull << 30);
    CU_ASSERT_EQUAL(ms_parse_size("100000", &v), 0);
    CU_ASSERT_EQUAL(v, 100000);
    CU_ASSERT_EQUAL(ms_parse_size("12parsecs", &v), -1);
    CU_ASSERT_EQUAL(ms_parse_size("", &v), -1);
    CU_ASSERT_EQUAL(ms_parse_size("-1M", &v), -1);
    /* Found by fuzzing: a value past 2^64 must be refused, not converted. */
    CU_ASSERT_EQUAL(ms_parse_size("4e58", &v), -1);
    CU_ASSERT_EQUAL(ms_parse_size("20000000T", &v), -1);
    CU_ASSERT_EQUAL(ms_parse_size("nan", &v), -1);
}

static void test_rates_and_durations(void)
{
    uint64_t v;
    CU_ASSERT_EQUAL(ms_parse_rate("1gbit", &v), 0);
    CU_ASSERT_EQUAL(v, 125000000);
    CU_ASSERT_EQUAL(ms_parse_rate("125M/s", &v), 0);
    CU_ASSERT_EQUAL(v, 125000000);
    CU_ASSERT_EQUAL(ms_parse_rate("1e30gbit", &v), -1);
    CU_ASSERT_EQUAL(ms_parse_duration_ms("10", &v), 0);
    CU_ASSERT_EQUAL(v, 10000);
    CU_ASSERT_EQUAL(ms_parse_duration_ms("500ms", &v), 0);
    CU_ASSERT_EQUAL(v, 500);
    CU_ASSERT_EQUAL(ms_parse_duration_ms("1e300", &v), -1);
    CU_ASSERT_EQUAL(ms_parse_duration_ms("5 fortnights", &v), -1);
}

static void test_uleb(void)
{
    uint8_t b[10];
    uint64_t v;
    size_t n = ms_uleb_put(b, UINT64_MAX);
    CU_ASSERT_EQUAL(n, 10);
    CU_ASSERT_EQUAL(ms_uleb_get(b, n, &v), 10);
    CU_ASSERT_EQUAL(v, UINT64_MAX);
    CU_ASSERT_EQUAL(ms_uleb_get(b, 9, &v), 0); /* truncated */
    b[9] = 0x02;                              /* bit 64: overflow */
    CU_ASSERT_EQUAL(ms_uleb_get(b, 10, &v), 0);
}

static void test_errors(void)
{
    CU_ASSERT_EQUAL(ms_error(MS_ERR_AUTH, "channel %d: %s", 2, "no proof"), MS_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(ms_last_error(), "channel 2: no proof");
    CU_ASSERT_EQUAL(ms_error_wrap(MS_ERR_AUTH, "session 7"), MS_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(ms_last_error(), "session 7: channel 2: no proof");
    CU_ASSERT_STRING_EQUAL(ms_strerror(MS_ERR_TAMPERED), "tampered frame");
    CU_ASSERT_STRING_EQUAL(ms_strerror(-999), "unknown error");
    ms_buf b = {0};
    CU_ASSERT_EQUAL(ms_buf_append(&b, NULL, 0), MS_OK);
    CU_ASSERT_EQUAL(ms_buf_append(&b, "abc", 3), MS_OK);
    CU_ASSERT_EQUAL(b.len, 3);
    CU_ASSERT_EQUAL(memcmp(b.data, "abc", 3), 0);
    ms_buf_free(&b);
}

static const ms_test_case cases[] = {
    {"sizes", test_sizes},
    {"rates and durations", test_rates_and_durations},
    {"uleb128 limits", test_uleb},
    {"errors and buffers", test_errors},
    {NULL, NULL},
};

MS_TEST_MAIN(ms_test_add_suite("common", cases))
