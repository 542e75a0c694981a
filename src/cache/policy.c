/*
 * policy.c - RFC 9111 (and 5861, 9213) decisions of a shared cache on
 * message heads (see policy.h).
 *
 * Where the RFCs leave room, weir takes the conservative reading:
 * no-cache="f" and private="f" count as their unqualified forms; a
 * freshness directive given twice with different values, or with a value
 * that is not delta-seconds, makes the response stale; a targeted field
 * that does not parse as a Structured Field Dictionary is ignored whole
 * (RFC 9213 2.1), and then Cache-Control decides.
 */
#include "cache/policy.h"

#include <string.h>
#include <strings.h>

void weir__cc_init(weir_cc *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->max_age = cc->s_maxage = cc->max_stale = cc->min_fresh = -1;
    cc->stale_while_revalidate = cc->stale_if_error = -1;
}

static bool named(weir_str n, const char *name)
{
    size_t len = strlen(name);
    return n.len == len && strncasecmp(n.ptr, name, len) == 0;
}

/* delta-seconds (RFC 9111 1.2.2): digits, capped at 2^31; -1 if not. */
static int64_t delta(const char *p, size_t len)
{
    if (len == 0)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        if (v < WEIR_CACHE_DELTA_MAX)
            v = v * 10 + (p[i] - '0');
    }
    return v > WEIR_CACHE_DELTA_MAX ? WEIR_CACHE_DELTA_MAX : v;
}

/* Sets a delta directive; twice with another value, or a bad value: the
 * message is marked invalid (and the value is 0, stale). */
static void set_delta(weir_cc *cc, int64_t *slot, int64_t v)
{
    if (v < 0 || (*slot >= 0 && *slot != v)) {
        cc->flags |= WEIR_CC_INVALID;
        *slot = 0;
        return;
    }
    *slot = v;
}

/* One directive: name, and its value (unquoted) if it has one. */
static void directive(weir_cc *cc, weir_str name, const char *v, size_t vl, bool has_value)
{
    static const struct {
        const char *name;
        uint32_t flag;
    } flags[] = {
        {"no-store", WEIR_CC_NO_STORE},
        {"no-cache", WEIR_CC_NO_CACHE},
        {"private", WEIR_CC_PRIVATE},
        {"public", WEIR_CC_PUBLIC},
        {"must-revalidate", WEIR_CC_MUST_REVALIDATE},
        {"proxy-revalidate", WEIR_CC_PROXY_REVALIDATE},
        {"only-if-cached", WEIR_CC_ONLY_IF_CACHED},
        {"no-transform", WEIR_CC_NO_TRANSFORM},
        {"immutable", WEIR_CC_IMMUTABLE},
        {"must-understand", WEIR_CC_MUST_UNDERSTAND},
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (named(name, flags[i].name)) {
            cc->flags |= flags[i].flag;
            return;
        }
    }
    int64_t d = has_value ? delta(v, vl) : -1;
    if (named(name, "max-age"))
        set_delta(cc, &cc->max_age, d);
    else if (named(name, "s-maxage"))
        set_delta(cc, &cc->s_maxage, d);
    else if (named(name, "max-stale"))
        cc->max_stale = has_value ? (d < 0 ? 0 : d) : WEIR_CACHE_DELTA_MAX;
    else if (named(name, "min-fresh"))
        cc->min_fresh = d < 0 ? WEIR_CACHE_DELTA_MAX : d; /* malformed: never fresh enough */
    else if (named(name, "stale-while-revalidate"))
        cc->stale_while_revalidate = d; /* malformed: no stale serving */
    else if (named(name, "stale-if-error"))
        cc->stale_if_error = d;
}

static bool tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* One Cache-Control field value: a list of directives. */
static void parse_list(weir_cc *cc, weir_str f)
{
    size_t i = 0, n = f.len;
    const char *p = f.ptr;
    char unq[256];
    while (i < n) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
            i++;
        size_t ns = i;
        while (i < n && tchar(p[i]))
            i++;
        weir_str name = {p + ns, i - ns};
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        const char *v = NULL;
        size_t vl = 0;
        bool has_value = false;
        if (i < n && p[i] == '=') {
            i++;
            while (i < n && (p[i] == ' ' || p[i] == '\t'))
                i++;
            has_value = true;
            if (i < n && p[i] == '"') { /* quoted-string, unescaped into unq */
                i++;
                while (i < n && p[i] != '"') {
                    if (p[i] == '\\' && i + 1 < n)
                        i++;
                    if (vl < sizeof(unq))
                        unq[vl++] = p[i];
                    i++;
                }
                i++; /* the closing quote (or the end) */
                v = unq;
            } else {
                size_t vs = i;
                while (i < n && tchar(p[i]))
                    i++;
                v = p + vs;
                vl = i - vs;
            }
        }
        if (name.len)
            directive(cc, name, v, vl, has_value);
        /* Anything but blanks before the next comma ("max-age=60; private",
         * "max-age=60 no-store") is not the grammar, and may hide a
         * directive that forbids sharing: nothing of this message is
         * stored. */
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        if (i < n && p[i] != ',')
            cc->flags |= WEIR_CC_NO_STORE | WEIR_CC_INVALID;
        while (i < n && p[i] != ',')
            i++;
    }
}

bool weir__cc_parse(const weir_headers *h, weir_cc *out)
{
    weir__cc_init(out);
    bool any = false;
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        if (named(f.name, "cache-control")) {
            any = true;
            parse_list(out, f.value);
        }
    }
    return any;
}

/* ---- targeted fields: a Structured Field Dictionary (RFC 8941 3.2) ---- */

typedef struct sf {
    const char *p;
    size_t n, i;
} sf;

static void sf_sp(sf *s, bool ows)
{
    while (s->i < s->n && (s->p[s->i] == ' ' || (ows && s->p[s->i] == '\t')))
        s->i++;
}

static bool sf_key(sf *s, weir_str *key)
{
    size_t st = s->i;
    if (s->i >= s->n || !((s->p[s->i] >= 'a' && s->p[s->i] <= 'z') || s->p[s->i] == '*'))
        return false;
    while (s->i < s->n) {
        char c = s->p[s->i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("_-.*", c)) || !c)
            break;
        s->i++;
    }
    *key = (weir_str){s->p + st, s->i - st};
    return true;
}

typedef struct sf_item {
    enum { SF_INT, SF_BOOL, SF_OTHER } kind;
    int64_t num;
    bool yes;
} sf_item;

/* A bare item; integers and booleans are kept, the rest only checked. */
static bool sf_bare(sf *s, sf_item *it)
{
    if (s->i >= s->n)
        return false;
    char c = s->p[s->i];
    if (c == '-' || (c >= '0' && c <= '9')) {
        bool neg = c == '-';
        size_t st = s->i + neg, digits = 0;
        s->i = st;
        while (s->i < s->n && s->p[s->i] >= '0' && s->p[s->i] <= '9' && digits <= 15) {
            s->i++;
            digits++;
        }
        if (digits == 0 || digits > 15)
            return false;
        if (s->i < s->n && s->p[s->i] == '.') { /* a decimal: not a delta */
            s->i++;
            size_t frac = 0;
            while (s->i < s->n && s->p[s->i] >= '0' && s->p[s->i] <= '9' && frac <= 3) {
                s->i++;
                frac++;
            }
            if (frac == 0 || frac > 3 || digits > 12)
                return false;
            it->kind = SF_OTHER;
            return true;
        }
        int64_t v = 0;
        for (size_t k = st; k < s->i; k++)
            v = v * 10 + (s->p[k] - '0');
        it->kind = SF_INT;
        it->num = neg ? -v : v;
        return true;
    }
    if (c == '"') {
        for (s->i++; s->i < s->n; s->i++) {
            char d = s->p[s->i];
            if (d == '\\') {
                if (++s->i >= s->n || (s->p[s->i] != '"' && s->p[s->i] != '\\'))
                    return false;
            } else if (d == '"') {
                s->i++;
                it->kind = SF_OTHER;
                return true;
            } else if ((unsigned char)d < 0x20 || (unsigned char)d > 0x7e) {
                return false;
            }
        }
        return false;
    }
    if (c == '?') {
        if (s->i + 1 >= s->n || (s->p[s->i + 1] != '0' && s->p[s->i + 1] != '1'))
            return false;
        it->kind = SF_BOOL;
        it->yes = s->p[s->i + 1] == '1';
        s->i += 2;
        return true;
    }
    if (c == ':') {
        for (s->i++; s->i < s->n && s->p[s->i] != ':'; s->i++) {
            char d = s->p[s->i];
            if (!((d >= 'a' && d <= 'z') || (d >= 'A' && d <= 'Z') || (d >= '0' && d <= '9') ||
                  d == '+' || d == '/' || d == '='))
                return false;
        }
        if (s->i >= s->n)
            return false;
        s->i++;
        it->kind = SF_OTHER;
        return true;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '*') {
        while (s->i < s->n && (tchar(s->p[s->i]) || s->p[s->i] == ':' || s->p[s->i] == '/'))
            s->i++;
        it->kind = SF_OTHER;
        return true;
    }
    return false;
}

static bool sf_params(sf *s)
{
    while (s->i < s->n && s->p[s->i] == ';') {
        s->i++;
        sf_sp(s, false);
        weir_str k;
        if (!sf_key(s, &k))
            return false;
        if (s->i < s->n && s->p[s->i] == '=') {
            s->i++;
            sf_item it;
            if (!sf_bare(s, &it))
                return false;
        }
    }
    return true;
}

/* One line of the dictionary into cc; false if it does not parse. Inner
 * lists are refused (no cache directive has one). */
static bool sf_line(weir_cc *cc, weir_str v)
{
    sf s = {v.ptr, v.len, 0};
    sf_sp(&s, true);
    if (s.i == s.n)
        return true;
    for (;;) {
        weir_str key;
        if (!sf_key(&s, &key))
            return false;
        sf_item it = {SF_BOOL, 0, true};
        if (s.i < s.n && s.p[s.i] == '=') {
            s.i++;
            if (!sf_bare(&s, &it))
                return false;
        }
        if (!sf_params(&s))
            return false;
        if (it.kind == SF_BOOL && it.yes)
            directive(cc, key, NULL, 0, false);
        else if (it.kind == SF_INT) {
            char num[24];
            int len = 0;
            int64_t x = it.num;
            if (x < 0) {
                directive(cc, key, "-", 1, true); /* a negative delta: malformed */
            } else {
                char tmp[24];
                do {
                    tmp[len++] = (char)('0' + x % 10);
                    x /= 10;
                } while (x);
                for (int k = 0; k < len; k++)
                    num[k] = tmp[len - 1 - k];
                directive(cc, key, num, (size_t)len, true);
            }
        }
        sf_sp(&s, true);
        if (s.i == s.n)
            return true;
        if (s.p[s.i] != ',')
            return false;
        s.i++;
        sf_sp(&s, true);
        if (s.i == s.n)
            return false; /* a trailing comma */
    }
}

bool weir__cc_parse_targeted(const weir_headers *h, const char *name, weir_cc *out)
{
    weir_cc cc;
    weir__cc_init(&cc);
    bool any = false;
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        if (!named(f.name, name))
            continue;
        any = true;
        if (!sf_line(&cc, f.value))
            return false;
    }
    if (any)
        *out = cc;
    return any;
}

/* ---- heads ---- */

static bool list_has_star(weir_str v)
{
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] == '*')
            return true;
    }
    return false;
}

void weir__cache_resp_read(weir_cache_resp *r, int status, const weir_headers *h,
                           const char *targeted, time_t received)
{
    memset(r, 0, sizeof(*r));
    r->status = status;
    r->age = -1;
    if (!targeted || !weir__cc_parse_targeted(h, targeted, &r->cc))
        weir__cc_parse(h, &r->cc);
    bool saw_date = false, saw_expires = false, saw_age = false;
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        time_t t;
        if (named(f.name, "date") && !saw_date) {
            saw_date = true;
            r->has_date = weir_http_date_parse(f.value, &t);
            r->date = t;
        } else if (named(f.name, "expires")) {
            /* Several, or one that is not a date ("0"): already expired. */
            r->expires_invalid = saw_expires || !weir_http_date_parse(f.value, &t);
            r->expires = r->expires_invalid ? 0 : t;
            r->has_expires = true;
            saw_expires = true;
        } else if (named(f.name, "last-modified")) {
            r->has_last_modified = weir_http_date_parse(f.value, &t);
            r->last_modified = t;
            r->has_validator = true;
        } else if (named(f.name, "etag")) {
            r->has_validator = true;
        } else if (named(f.name, "age")) {
            r->age = saw_age ? -1 : delta(f.value.ptr, f.value.len);
            saw_age = true;
        } else if (named(f.name, "vary") && list_has_star(f.value)) {
            r->vary_star = true;
        } else if (named(f.name, "set-cookie")) {
            r->set_cookie = true;
        }
    }
    if (!r->has_date)
        r->date = received; /* RFC 9110 6.6.1: the time it came */
}

void weir__cache_req_read(weir_cache_req *q, const weir_headers *h)
{
    memset(q, 0, sizeof(*q));
    q->has_cc = weir__cc_parse(h, &q->cc);
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        if (named(f.name, "authorization")) {
            q->authorization = true;
        } else if (named(f.name, "pragma")) {
            weir_cc p;
            weir__cc_init(&p);
            parse_list(&p, f.value);
            q->pragma_no_cache |= (p.flags & WEIR_CC_NO_CACHE) != 0;
        }
    }
}

/* ---- decisions ---- */

bool weir__cache_heuristic_status(int status)
{
    switch (status) {
    case 200:
    case 203:
    case 204:
    case 206:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 501:
        return true;
    default:
        return false;
    }
}

weir_cache_nostore weir__cache_storable(const char *method, const weir_cache_req *q,
                                        const weir_cache_resp *r, bool store_cookies)
{
    if (strcmp(method, "GET") != 0)
        return WEIR_NOSTORE_METHOD;
    if (r->status < 200 || r->status > 599 || r->status == 206 || r->status == 304)
        return WEIR_NOSTORE_STATUS;
    if ((q->cc.flags | r->cc.flags) & WEIR_CC_NO_STORE || r->cc.flags & WEIR_CC_PRIVATE)
        return WEIR_NOSTORE_DIRECTIVE;
    if (q->authorization && !(r->cc.flags & (WEIR_CC_MUST_REVALIDATE | WEIR_CC_PUBLIC)) &&
        r->cc.s_maxage < 0)
        return WEIR_NOSTORE_AUTH;
    if (r->vary_star)
        return WEIR_NOSTORE_VARY_STAR;
    if (r->set_cookie && !store_cookies)
        return WEIR_NOSTORE_COOKIE;
    bool explicit =
        r->cc.flags & WEIR_CC_PUBLIC || r->cc.max_age >= 0 || r->cc.s_maxage >= 0 || r->has_expires;
    if (!explicit && !weir__cache_heuristic_status(r->status))
        return WEIR_NOSTORE_NO_FRESHNESS;
    return WEIR_NOSTORE_NONE;
}

int64_t weir__cache_lifetime(const weir_cache_resp *r, int64_t heuristic_max, bool *heuristic)
{
    *heuristic = false;
    if (r->cc.flags & WEIR_CC_INVALID)
        return 0;
    if (r->cc.s_maxage >= 0)
        return r->cc.s_maxage;
    if (r->cc.max_age >= 0)
        return r->cc.max_age;
    if (r->has_expires) {
        if (r->expires_invalid || r->expires <= r->date)
            return 0;
        int64_t d = (int64_t)r->expires - (int64_t)r->date;
        return d > WEIR_CACHE_DELTA_MAX ? WEIR_CACHE_DELTA_MAX : d;
    }
    if ((weir__cache_heuristic_status(r->status) || r->cc.flags & WEIR_CC_PUBLIC) &&
        r->has_last_modified && r->date > r->last_modified) {
        *heuristic = true;
        int64_t d = ((int64_t)r->date - (int64_t)r->last_modified) / 10;
        return d > heuristic_max ? heuristic_max : d;
    }
    return 0;
}

int64_t weir__cache_age(const weir_cache_resp *r, time_t request_time, time_t response_time,
                        time_t now)
{
    int64_t apparent = r->has_date ? (int64_t)response_time - (int64_t)r->date : 0;
    if (apparent < 0)
        apparent = 0;
    int64_t delay = (int64_t)response_time - (int64_t)request_time;
    if (delay < 0)
        delay = 0;
    int64_t corrected = (r->age >= 0 ? r->age : 0) + delay;
    int64_t initial = apparent > corrected ? apparent : corrected;
    int64_t resident = (int64_t)now - (int64_t)response_time;
    if (resident < 0)
        resident = 0;
    int64_t age = initial + resident;
    return age > WEIR_CACHE_DELTA_MAX ? WEIR_CACHE_DELTA_MAX : age;
}

/* May the response be served stale at all (5.2.2.2, 5.2.2.8, 5.2.2.10)? */
static bool stale_allowed(const weir_cache_resp *r)
{
    return !(r->cc.flags & (WEIR_CC_MUST_REVALIDATE | WEIR_CC_PROXY_REVALIDATE)) &&
           r->cc.s_maxage < 0;
}

weir_cache_use weir__cache_use(const weir_cache_req *q, const weir_cache_resp *r, int64_t lifetime,
                               int64_t age)
{
    if (r->cc.flags & WEIR_CC_NO_CACHE)
        return WEIR_CACHE_VALIDATE;
    if (q->cc.flags & WEIR_CC_NO_CACHE || (!q->has_cc && q->pragma_no_cache))
        return WEIR_CACHE_VALIDATE;
    if (q->cc.max_age >= 0 && age > q->cc.max_age)
        return WEIR_CACHE_VALIDATE;
    int64_t left = lifetime - age;
    if (q->cc.min_fresh >= 0 && left < q->cc.min_fresh)
        return WEIR_CACHE_VALIDATE;
    if (left > 0)
        return WEIR_CACHE_USE;
    if (!stale_allowed(r))
        return WEIR_CACHE_VALIDATE;
    int64_t stale = -left;
    if (q->cc.max_stale >= 0 && stale <= q->cc.max_stale)
        return WEIR_CACHE_USE_STALE;
    if (r->cc.stale_while_revalidate >= 0 && stale <= r->cc.stale_while_revalidate)
        return WEIR_CACHE_USE_REVALIDATING;
    return WEIR_CACHE_VALIDATE;
}

bool weir__cache_stale_on_error(const weir_cache_req *q, const weir_cache_resp *r, int64_t lifetime,
                                int64_t age, int64_t window)
{
    if (!stale_allowed(r))
        return false;
    int64_t stale = age - lifetime, allowed = window;
    if (r->cc.stale_if_error > allowed)
        allowed = r->cc.stale_if_error;
    if (q->cc.stale_if_error > allowed)
        allowed = q->cc.stale_if_error;
    return stale <= allowed;
}
