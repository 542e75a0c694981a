/*
 * date.c - HTTP dates (RFC 9110 5.6.7), formatted and parsed by hand:
 * strftime and strptime follow the locale, and timegm is a GNU extension
 * whose range we would have to check anyway. The parser takes a slice and
 * never reads past it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "weir/headers.h"

static const char wday_short[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const wday_long[7] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                         "Thursday", "Friday", "Saturday"};
static const char mon_name[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

size_t weir_http_date(time_t t, char out[30])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900) {
        out[0] = '\0';
        return 0;
    }
    int n =
        snprintf(out, 30, "%s, %02d %s %04d %02d:%02d:%02d GMT", wday_short[tm.tm_wday], tm.tm_mday,
                 mon_name[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return n == 29 ? 29 : 0;
}

/* ---- parsing ---- */

typedef struct cur {
    const char *p;
    size_t len, i;
} cur;

static bool lit(cur *c, const char *s)
{
    size_t n = strlen(s);
    if (c->len - c->i < n || memcmp(c->p + c->i, s, n) != 0)
        return false;
    c->i += n;
    return true;
}

/* Exactly n digits. */
static bool num(cur *c, int n, int *out)
{
    if (c->len - c->i < (size_t)n)
        return false;
    int v = 0;
    for (int k = 0; k < n; k++) {
        char d = c->p[c->i + (size_t)k];
        if (d < '0' || d > '9')
            return false;
        v = v * 10 + (d - '0');
    }
    c->i += (size_t)n;
    *out = v;
    return true;
}

static bool month(cur *c, int *m)
{
    for (int k = 0; k < 12; k++) {
        if (lit(c, mon_name[k])) {
            *m = k + 1;
            return true;
        }
    }
    return false;
}

static bool wday(cur *c, bool long_form)
{
    for (int k = 0; k < 7; k++) {
        if (lit(c, long_form ? wday_long[k] : wday_short[k]))
            return true;
    }
    return false;
}

/* "HH:MM:SS" */
static bool hms(cur *c, int *h, int *mi, int *s)
{
    return num(c, 2, h) && lit(c, ":") && num(c, 2, mi) && lit(c, ":") && num(c, 2, s);
}

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool to_time(int y, int m, int d, int h, int mi, int s, time_t *t)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int max = mdays[m - 1] + (m == 2 && leap(y));
    if (d < 1 || d > max || h > 23 || mi > 59 || s > 60)
        return false;
    *t = (time_t)(days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + s);
    return true;
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" */
static bool imf_fixdate(cur c, time_t *t)
{
    int d, m, y, h, mi, s;
    return wday(&c, false) && lit(&c, ", ") && num(&c, 2, &d) && lit(&c, " ") && month(&c, &m) &&
           lit(&c, " ") && num(&c, 4, &y) && lit(&c, " ") && hms(&c, &h, &mi, &s) &&
           lit(&c, " GMT") && c.i == c.len && to_time(y, m, d, h, mi, s, t);
}

/* "Sunday, 06-Nov-94 08:49:37 GMT" */
static bool rfc850(cur c, time_t *t)
{
    int d, m, yy, h, mi, s;
    if (!(wday(&c, true) && lit(&c, ", ") && num(&c, 2, &d) && lit(&c, "-") && month(&c, &m) &&
          lit(&c, "-") && num(&c, 2, &yy) && lit(&c, " ") && hms(&c, &h, &mi, &s) &&
          lit(&c, " GMT") && c.i == c.len))
        return false;
    /* RFC 9110 5.6.7: a two-digit year more than 50 years in the future is
     * the most recent past year with those digits. */
    time_t now = time(NULL);
    struct tm tm;
    int cur_year = gmtime_r(&now, &tm) ? tm.tm_year + 1900 : 2000;
    int y = cur_year / 100 * 100 + yy;
    if (y > cur_year + 50)
        y -= 100;
    return to_time(y, m, d, h, mi, s, t);
}

/* "Sun Nov  6 08:49:37 1994" */
static bool asctime_date(cur c, time_t *t)
{
    int d, m, y, h, mi, s;
    if (!(wday(&c, false) && lit(&c, " ") && month(&c, &m) && lit(&c, " ")))
        return false;
    if (!(lit(&c, " ") ? num(&c, 1, &d) : num(&c, 2, &d)))
        return false;
    return lit(&c, " ") && hms(&c, &h, &mi, &s) && lit(&c, " ") && num(&c, 4, &y) && c.i == c.len &&
           to_time(y, m, d, h, mi, s, t);
}

static weir_str trim(weir_str v)
{
    while (v.len && (v.ptr[0] == ' ' || v.ptr[0] == '\t')) {
        v.ptr++;
        v.len--;
    }
    while (v.len && (v.ptr[v.len - 1] == ' ' || v.ptr[v.len - 1] == '\t'))
        v.len--;
    return v;
}

bool weir_http_date_parse(weir_str v, time_t *t)
{
    if (!v.ptr)
        return false;
    v = trim(v);
    cur c = {v.ptr, v.len, 0};
    return imf_fixdate(c, t) || rfc850(c, t) || asctime_date(c, t);
}
