/*
 * toml_fuzz.c - libFuzzer target for the TOML parser (src/app/toml.c).
 *
 * Besides crashes, sanitizer reports and leaks it checks the parser's
 * contracts: an error has a position inside the input and a message; a
 * document's values all have sane positions and in-range fields, and its
 * strings are NUL-terminated at their length; parsing without an error
 * struct gives the same verdict.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

#include "app/toml/toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk(const weir_toml_value *v, int max_line)
{
    CHECK(weir_toml_line(v) >= 1 && weir_toml_line(v) <= max_line);
    CHECK(weir_toml_column(v) >= 1);
    weir_toml_datetime dt;
    size_t len;
    const char *s;
    switch (weir_toml_type_of(v)) {
    case WEIR_TOML_TABLE: {
        weir_toml_entry e;
        size_t n = weir_toml_table_count(v), i = 0;
        for (; weir_toml_table_entry(v, i, &e); i++) {
            CHECK(e.line >= 1 && e.line <= max_line && e.column >= 1);
            CHECK(e.key[e.key_len] == '\0');
            /* the first entry of that name is this one: no duplicates */
            weir_toml_entry f;
            CHECK(weir_toml_table_getn(v, e.key, e.key_len, &f) == e.value);
            CHECK(f.line == e.line && f.column == e.column);
            walk(e.value, max_line);
        }
        CHECK(i == n);
        break;
    }
    case WEIR_TOML_ARRAY:
        for (size_t i = 0; i < weir_toml_array_count(v); i++)
            walk(weir_toml_array_at(v, i), max_line);
        CHECK(weir_toml_array_at(v, weir_toml_array_count(v)) == NULL);
        break;
    case WEIR_TOML_STRING:
        s = weir_toml_string(v, &len);
        CHECK(s && s[len] == '\0');
        break;
    case WEIR_TOML_INTEGER:
    case WEIR_TOML_FLOAT:
    case WEIR_TOML_BOOL:
        break;
    case WEIR_TOML_DATETIME:
    case WEIR_TOML_DATETIME_LOCAL:
    case WEIR_TOML_DATE_LOCAL:
    case WEIR_TOML_TIME_LOCAL:
        CHECK(weir_toml_datetime_get(v, &dt));
        CHECK(dt.has_date || dt.has_time);
        if (dt.has_date)
            CHECK(dt.month >= 1 && dt.month <= 12 && dt.day >= 1 && dt.day <= 31);
        if (dt.has_time)
            CHECK(dt.hour <= 23 && dt.minute <= 59 && dt.second <= 60 &&
                  dt.nanosecond < 1000000000 && dt.frac_digits <= 9);
        CHECK(!dt.has_offset || (dt.offset_minutes > -1440 && dt.offset_minutes < 1440));
        CHECK(dt.has_offset == (weir_toml_type_of(v) == WEIR_TOML_DATETIME));
        break;
    default:
        CHECK(!"unknown type");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy so that ASan catches any read past the end. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);

    int max_line = 1;
    for (size_t i = 0; i < size; i++)
        max_line += buf[i] == '\n';

    weir_toml_error err;
    weir_toml_value *root = weir_toml_parse(buf, size, &err);
    weir_toml_value *again = weir_toml_parse(buf, size, NULL);
    CHECK(!root == !again);
    if (root) {
        CHECK(weir_toml_type_of(root) == WEIR_TOML_TABLE);
        walk(root, max_line);
    } else {
        char line[256];
        CHECK(err.line >= 1 && err.line <= max_line && err.column >= 1);
        CHECK(err.message[0] != '\0');
        CHECK(weir_toml_error_format(&err, "f", line, sizeof(line)) > 0);
    }
    weir_toml_free(root);
    weir_toml_free(again);
    free(buf);
    return 0;
}
