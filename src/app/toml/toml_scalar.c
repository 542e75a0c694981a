/*
 * toml_scalar.c - TOML integers, floats and date-times (see toml_scalar.h).
 *
 * The caller cuts the token (everything up to whitespace, ',', ']', '}' or
 * '#', with the one space of "1979-05-27 07:32:00" included); this file
 * decides what the token is and whether it follows TOML 1.0's rules:
 * underscores only between digits, no leading zeros in decimal numbers, no
 * sign on 0x/0o/0b, int64 range, valid calendar dates and clock times.
 */
#include "app/toml/toml_scalar.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct scan {
    const char *t;
    size_t n;
    size_t *err_off;
    char *msg;
    size_t msg_size;
} scan;

static bool bad(scan *s, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records an error at token offset off; returns false. */
static bool bad(scan *s, size_t off, const char *fmt, ...)
{
    va_list ap;
    *s->err_off = off < s->n ? off : s->n;
    va_start(ap, fmt);
    vsnprintf(s->msg, s->msg_size, fmt, ap);
    va_end(ap);
    return false;
}

static int at(const scan *s, size_t i)
{
    return i < s->n ? (unsigned char)s->t[i] : -1;
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int digit_value(int c, int radix)
{
    int d = -1;
    if (c >= '0' && c <= '9')
        d = c - '0';
    else if (c >= 'a' && c <= 'f')
        d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
        d = c - 'A' + 10;
    return d < radix ? d : -1;
}

/* Digits of radix from *i on, '_' allowed only between two digits. */
static bool digits(scan *s, size_t *i, int radix, size_t *count, const char *what)
{
    size_t k = *i, cnt = 0;
    for (;;) {
        int c = at(s, k);
        if (digit_value(c, radix) >= 0) {
            cnt++;
            k++;
        } else if (c == '_') {
            if (cnt == 0 || digit_value(at(s, k + 1), radix) < 0)
                return bad(s, k, "'_' must be between two digits in %s", what);
            k++;
        } else {
            break;
        }
    }
    if (cnt == 0)
        return bad(s, k, "expected a digit in %s", what);
    *i = k;
    *count = cnt;
    return true;
}

static bool parse_radix(scan *s, weir__toml_scalar *out)
{
    int radix = s->t[1] == 'x' ? 16 : s->t[1] == 'o' ? 8 : 2;
    const char *name = radix == 16 ? "a hexadecimal" : radix == 8 ? "an octal" : "a binary";
    size_t i = 2, cnt = 0;
    if (!digits(s, &i, radix, &cnt, "an integer"))
        return false;
    if (i != s->n)
        return bad(s, i, "invalid character in %s integer", name);
    uint64_t acc = 0;
    for (size_t k = 2; k < s->n; k++) {
        int d = digit_value((unsigned char)s->t[k], radix);
        if (d < 0)
            continue;
        if (acc > ((uint64_t)INT64_MAX - (uint64_t)d) / (uint64_t)radix)
            return bad(s, 0, "integer does not fit in 64 bits");
        acc = acc * (uint64_t)radix + (uint64_t)d;
    }
    out->type = WEIR_TOML_INTEGER;
    out->u.i = (int64_t)acc;
    return true;
}

static bool to_double(scan *s, weir__toml_scalar *out)
{
    char small[128], *buf = small;
    if (s->n >= sizeof(small)) {
        buf = malloc(s->n + 1);
        if (!buf)
            return bad(s, 0, "out of memory");
    }
    size_t o = 0;
    for (size_t k = 0; k < s->n; k++)
        if (s->t[k] != '_')
            buf[o++] = s->t[k];
    buf[o] = '\0';
    out->type = WEIR_TOML_FLOAT;
    out->u.f = strtod(buf, NULL);
    if (buf != small)
        free(buf);
    return true;
}

static bool parse_number(scan *s, weir__toml_scalar *out)
{
    size_t i = 0, cnt = 0;
    bool neg = false, is_float = false;
    if (at(s, 0) == '+' || at(s, 0) == '-') {
        neg = at(s, 0) == '-';
        i = 1;
    }
    if (s->n - i == 3 && (memcmp(s->t + i, "inf", 3) == 0 || memcmp(s->t + i, "nan", 3) == 0)) {
        out->type = WEIR_TOML_FLOAT;
        if (s->t[i] == 'i')
            out->u.f = neg ? -HUGE_VAL : HUGE_VAL;
        else
            out->u.f = neg ? -NAN : NAN;
        return true;
    }
    size_t int_start = i;
    if (!digits(s, &i, 10, &cnt, "a number"))
        return false;
    if (s->t[int_start] == '0' && cnt > 1)
        return bad(s, int_start, "leading zeros are not allowed in a number");
    if (at(s, i) == '.') {
        i++;
        if (!digits(s, &i, 10, &cnt, "the fraction of a float"))
            return false;
        is_float = true;
    }
    if (at(s, i) == 'e' || at(s, i) == 'E') {
        i++;
        if (at(s, i) == '+' || at(s, i) == '-')
            i++;
        if (!digits(s, &i, 10, &cnt, "the exponent of a float"))
            return false;
        is_float = true;
    }
    if (i != s->n)
        return bad(s, i, "invalid character in a number");
    if (is_float)
        return to_double(s, out);

    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, acc = 0;
    for (size_t k = int_start; k < s->n; k++) {
        if (s->t[k] == '_')
            continue;
        uint64_t d = (uint64_t)(s->t[k] - '0');
        if (acc > (limit - d) / 10)
            return bad(s, 0, "integer does not fit in 64 bits");
        acc = acc * 10 + d;
    }
    out->type = WEIR_TOML_INTEGER;
    if (!neg)
        out->u.i = (int64_t)acc;
    else if (acc == (uint64_t)INT64_MAX + 1)
        out->u.i = INT64_MIN;
    else
        out->u.i = -(int64_t)acc;
    return true;
}

/* Two digits at t[i], or -1. */
static int two_digits(const scan *s, size_t i)
{
    int a = at(s, i), b = at(s, i + 1);
    if (!is_digit(a) || !is_digit(b))
        return -1;
    return (a - '0') * 10 + (b - '0');
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month == 2 && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))
        return 29;
    return days[month - 1];
}

static bool parse_datetime(scan *s, bool has_date, weir__toml_scalar *out)
{
    weir_toml_datetime dt;
    size_t i = 0;
    memset(&dt, 0, sizeof(dt));
    if (has_date) {
        int y1 = two_digits(s, 0), y2 = two_digits(s, 2);
        dt.month = two_digits(s, 5);
        dt.day = two_digits(s, 8);
        if (y1 < 0 || y2 < 0 || at(s, 4) != '-' || dt.month < 0 || at(s, 7) != '-' || dt.day < 0)
            return bad(s, 0, "invalid date, expected YYYY-MM-DD");
        dt.year = y1 * 100 + y2;
        if (dt.month < 1 || dt.month > 12)
            return bad(s, 5, "month %02d is out of range", dt.month);
        if (dt.day < 1 || dt.day > days_in_month(dt.year, dt.month))
            return bad(s, 8, "day %02d is out of range for %04d-%02d", dt.day, dt.year, dt.month);
        dt.has_date = true;
        i = 10;
        if (i == s->n) {
            out->type = WEIR_TOML_DATE_LOCAL;
            out->u.dt = dt;
            return true;
        }
        if (at(s, i) != 'T' && at(s, i) != 't' && at(s, i) != ' ')
            return bad(s, i, "invalid character after a date");
        i++;
    }
    dt.hour = two_digits(s, i);
    dt.minute = two_digits(s, i + 3);
    dt.second = two_digits(s, i + 6);
    if (dt.hour < 0 || at(s, i + 2) != ':' || dt.minute < 0 || at(s, i + 5) != ':' || dt.second < 0)
        return bad(s, i, "invalid time, expected HH:MM:SS");
    if (dt.hour > 23)
        return bad(s, i, "hour %02d is out of range", dt.hour);
    if (dt.minute > 59)
        return bad(s, i + 3, "minute %02d is out of range", dt.minute);
    if (dt.second > 60)
        return bad(s, i + 6, "second %02d is out of range", dt.second);
    dt.has_time = true;
    i += 8;
    if (at(s, i) == '.') {
        i++;
        size_t n = 0;
        for (; is_digit(at(s, i)); i++, n++) {
            if (n < 9) {
                dt.nanosecond = dt.nanosecond * 10 + (s->t[i] - '0');
                dt.frac_digits++;
            }
        }
        if (n == 0)
            return bad(s, i, "expected digits after '.' in a time");
        for (int k = dt.frac_digits; k < 9; k++)
            dt.nanosecond *= 10;
    }
    if (has_date && (at(s, i) == 'Z' || at(s, i) == 'z')) {
        dt.has_offset = dt.offset_z = true;
        i++;
    } else if (has_date && (at(s, i) == '+' || at(s, i) == '-')) {
        int sign = at(s, i) == '-' ? -1 : 1;
        int oh = two_digits(s, i + 1), om = two_digits(s, i + 4);
        if (oh < 0 || at(s, i + 3) != ':' || om < 0)
            return bad(s, i, "invalid time offset, expected +HH:MM or -HH:MM");
        if (oh > 23 || om > 59)
            return bad(s, i, "time offset %.6s is out of range", s->t + i);
        dt.has_offset = true;
        dt.offset_minutes = sign * (oh * 60 + om);
        i += 6;
    }
    if (i != s->n)
        return bad(s, i, "invalid character in a %s", has_date ? "date-time" : "time");
    out->type = !has_date       ? WEIR_TOML_TIME_LOCAL
                : dt.has_offset ? WEIR_TOML_DATETIME
                                : WEIR_TOML_DATETIME_LOCAL;
    out->u.dt = dt;
    return true;
}

bool weir__toml_scalar_parse(const char *t, size_t n, weir__toml_scalar *out, size_t *err_off,
                             char *msg, size_t msg_size)
{
    scan s = {.t = t, .n = n, .err_off = err_off, .msg = msg, .msg_size = msg_size};
    memset(out, 0, sizeof(*out));
    if (n >= 5 && two_digits(&s, 0) >= 0 && two_digits(&s, 2) >= 0 && t[4] == '-')
        return parse_datetime(&s, true, out);
    if (n >= 3 && two_digits(&s, 0) >= 0 && t[2] == ':')
        return parse_datetime(&s, false, out);
    if (n >= 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'o' || t[1] == 'b'))
        return parse_radix(&s, out);
    if (n == 0)
        return bad(&s, 0, "expected a value");
    return parse_number(&s, out);
}
