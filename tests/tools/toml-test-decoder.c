/*
 * toml-test-decoder.c - reads TOML on stdin and prints it as toml-test's
 * tagged JSON (every scalar {"type": ..., "value": "..."}); on a parse error
 * prints "stdin:LINE:COLUMN: message" on stderr and exits 1. Used by
 * tests/integration/test_toml_conformance.py.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/toml/toml.h"

static void put_json_string(const char *s, size_t len)
{
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            fputs("\\\"", stdout);
            break;
        case '\\':
            fputs("\\\\", stdout);
            break;
        case '\n':
            fputs("\\n", stdout);
            break;
        case '\r':
            fputs("\\r", stdout);
            break;
        case '\t':
            fputs("\\t", stdout);
            break;
        case '\b':
            fputs("\\b", stdout);
            break;
        case '\f':
            fputs("\\f", stdout);
            break;
        default:
            if (c < 0x20 || c == 0x7f)
                printf("\\u%04x", c);
            else
                putchar(c);
        }
    }
    putchar('"');
}

static void put_datetime(const weir_toml_datetime *dt)
{
    if (dt->has_date)
        printf("%04d-%02d-%02d", dt->year, dt->month, dt->day);
    if (dt->has_date && dt->has_time)
        putchar('T');
    if (dt->has_time) {
        printf("%02d:%02d:%02d", dt->hour, dt->minute, dt->second);
        if (dt->frac_digits > 0) {
            int ns = dt->nanosecond;
            for (int k = dt->frac_digits; k < 9; k++)
                ns /= 10;
            printf(".%0*d", dt->frac_digits, ns);
        }
    }
    if (dt->has_offset) {
        if (dt->offset_z) {
            putchar('Z');
        } else {
            int m = dt->offset_minutes < 0 ? -dt->offset_minutes : dt->offset_minutes;
            printf("%c%02d:%02d", dt->offset_minutes < 0 ? '-' : '+', m / 60, m % 60);
        }
    }
}

static void put_value(const weir_toml_value *v)
{
    weir_toml_type type = weir_toml_type_of(v);
    const char *tag = "?";
    switch (type) {
    case WEIR_TOML_TABLE: {
        weir_toml_entry e;
        putchar('{');
        for (size_t i = 0; weir_toml_table_entry(v, i, &e); i++) {
            if (i)
                putchar(',');
            put_json_string(e.key, e.key_len);
            putchar(':');
            put_value(e.value);
        }
        putchar('}');
        return;
    }
    case WEIR_TOML_ARRAY:
        putchar('[');
        for (size_t i = 0; i < weir_toml_array_count(v); i++) {
            if (i)
                putchar(',');
            put_value(weir_toml_array_at(v, i));
        }
        putchar(']');
        return;
    case WEIR_TOML_STRING:
        tag = "string";
        break;
    case WEIR_TOML_INTEGER:
        tag = "integer";
        break;
    case WEIR_TOML_FLOAT:
        tag = "float";
        break;
    case WEIR_TOML_BOOL:
        tag = "bool";
        break;
    case WEIR_TOML_DATETIME:
        tag = "datetime";
        break;
    case WEIR_TOML_DATETIME_LOCAL:
        tag = "datetime-local";
        break;
    case WEIR_TOML_DATE_LOCAL:
        tag = "date-local";
        break;
    case WEIR_TOML_TIME_LOCAL:
        tag = "time-local";
        break;
    }
    printf("{\"type\":\"%s\",\"value\":", tag);
    if (type == WEIR_TOML_STRING) {
        size_t len;
        const char *s = weir_toml_string(v, &len);
        put_json_string(s, len);
    } else {
        putchar('"');
        int64_t i;
        double f;
        bool b;
        weir_toml_datetime dt;
        if (weir_toml_int(v, &i)) {
            printf("%" PRId64, i);
        } else if (weir_toml_double(v, &f)) {
            if (isnan(f))
                fputs("nan", stdout);
            else if (isinf(f))
                fputs(f < 0 ? "-inf" : "inf", stdout);
            else
                printf("%.17g", f);
        } else if (weir_toml_bool(v, &b)) {
            fputs(b ? "true" : "false", stdout);
        } else if (weir_toml_datetime_get(v, &dt)) {
            put_datetime(&dt);
        }
        putchar('"');
    }
    putchar('}');
}

int main(void)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    if (!buf)
        return 2;
    for (;;) {
        if (len == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return 2;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, stdin);
        if (got == 0)
            break;
        len += got;
    }
    weir_toml_error err;
    weir_toml_value *root = weir_toml_parse(buf, len, &err);
    free(buf);
    if (!root) {
        char line[256];
        weir_toml_error_format(&err, "stdin", line, sizeof(line));
        fprintf(stderr, "%s\n", line);
        return 1;
    }
    put_value(root);
    putchar('\n');
    weir_toml_free(root);
    return 0;
}
