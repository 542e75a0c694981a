/*
 * range_fuzz.c - libFuzzer target for the static-file parsers
 * (src/app/plugin/files_range.c, files_http.c): the Range field, HTTP
 * dates and the entity-tag lists of the conditional fields.
 *
 * Input: one byte that picks the file size (low 3 bits) and max (the rest,
 * 0-31), then the field value. The value is copied to a buffer of its
 * exact size, so a read past its length is ASan's to see.
 *
 * Invariants:
 *   - weir__range_parse answers NONE, OK or UNSATISFIABLE, n is 0 unless
 *     OK; with OK, 1 <= n <= max, each range is non-empty and inside the
 *     file, no two overlap, three or more are ascending and average
 *     WEIR_RANGE_MIN_MEAN bytes; an empty file is never OK;
 *   - the multipart length is the sum of the heads as written, the
 *     ranges and the tail;
 *   - a date that parses formats back to a date that parses to the same
 *     time;
 *   - the conditionals answer 200, 304 (GET/HEAD only) or 412.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

#include "app/plugin/files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint64_t sizes[8] = {0, 1, 2, 100, 1000, 65536, UINT64_MAX / 2, UINT64_MAX};

static void check_ranges(weir_str v, uint64_t fsize, size_t max)
{
    weir_range r[32];
    size_t n = 99;
    int rc = weir__range_parse(v, fsize, r, max, &n);
    CHECK(rc == WEIR_RANGE_NONE || rc == WEIR_RANGE_OK || rc == WEIR_RANGE_UNSATISFIABLE);
    if (rc != WEIR_RANGE_OK) {
        CHECK(n == 0);
        return;
    }
    CHECK(fsize > 0);
    CHECK(n >= 1 && n <= max);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(r[i].len >= 1 && r[i].start < fsize && r[i].len <= fsize - r[i].start);
        for (size_t k = i + 1; k < n; k++)
            CHECK(r[i].start + r[i].len <= r[k].start || r[k].start + r[k].len <= r[i].start);
        if (n >= 3 && i > 0)
            CHECK(r[i].start > r[i - 1].start);
        total += r[i].len;
    }
    if (n >= 3)
        CHECK(total / n >= WEIR_RANGE_MIN_MEAN);
    weir_range again[32];
    size_t n2;
    CHECK(weir__range_parse(v, fsize, again, max, &n2) == rc && n2 == n);
    CHECK(memcmp(again, r, n * sizeof(*r)) == 0);

    /* The multipart length against what the heads really take. */
    const char *b = "0123456789abcdef0123456789abcdef";
    uint64_t sum = weir__multipart_tail(NULL, 0, b);
    char head[256];
    for (size_t i = 0; i < n; i++) {
        size_t h = weir__multipart_part_head(head, sizeof(head), b, "text/plain", r[i], fsize);
        CHECK(h < sizeof(head) && h == strlen(head));
        sum += h + r[i].len;
    }
    CHECK(sum == weir__multipart_length(b, "text/plain", r, n, fsize));
}

static void check_date(weir_str v)
{
    time_t t;
    if (!weir_http_date_parse(v, &t))
        return;
    char out[30];
    if (weir_http_date(t, out) == 0)
        return; /* a year past 9999: a leap second on 9999-12-31 23:59:60 */
    time_t back;
    CHECK(weir_http_date_parse((weir_str){out, strlen(out)}, &back) && back == t);
}

static void check_conditionals(weir_str v)
{
    weir_str etags[] = {WEIR_STR("\"abc\""), WEIR_STR("W/\"abc\""), WEIR_STR_NULL, v};
    for (size_t i = 0; i < 4; i++) {
        for (int get = 0; get < 2; get++) {
            int c = weir__files_conditional(v, v, v, v, get, etags[i], 784111777);
            CHECK(c == 200 || c == 412 || (c == 304 && get));
            c = weir__files_conditional(v, WEIR_STR_NULL, WEIR_STR_NULL, WEIR_STR_NULL, get,
                                        etags[i], 0);
            CHECK(c == 200 || c == 412);
            c = weir__files_conditional(WEIR_STR_NULL, WEIR_STR_NULL, v, WEIR_STR_NULL, get,
                                        etags[i], 0);
            CHECK(c == 200 || c == 412 || (c == 304 && get));
        }
        (void)weir__files_if_range(v, etags[i], 784111777);
    }
    /* A weak validator never lets a Range through: only a date can. */
    time_t t;
    CHECK(!weir__files_if_range(v, WEIR_STR("W/\"abc\""), 784111777) ||
          weir_http_date_parse(v, &t));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint64_t fsize = sizes[data[0] & 7];
    size_t max = data[0] >> 3;
    size_t len = size - 1;
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return 0;
    memcpy(copy, data + 1, len);
    weir_str v = {copy, len};
    check_ranges(v, fsize, max);
    check_date(v);
    check_conditionals(v);
    free(copy);
    return 0;
}
