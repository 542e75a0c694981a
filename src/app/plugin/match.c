/*
 * match.c - pattern lists for the restriction and cors plugins (see
 * match.h).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "app/plugin/match.h"

#include <ctype.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/route.h"
#include "app/toml/toml.h"

typedef struct pattern {
    char *text;     /* exact or wildcard */
    pcre2_code *re; /* regex, else NULL */
    bool wildcard;
} pattern;

struct weir_patterns {
    pattern *v;
    size_t n;
};

void weir__patterns_free(weir_patterns *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].text);
        pcre2_code_free(p->v[i].re);
    }
    free(p->v);
    free(p);
}

weir_patterns *weir__patterns_load(loader *ld, const weir_toml_value *t, const char *key,
                                   const char *section, bool *present)
{
    size_t n = 0;
    int line = 0;
    weir_toml_entry e;
    *present = weir__cfg_entry_of(t, key, &e);
    char **items = weir__cfg_get_string_list(ld, t, key, section, &n, &line);
    if (!items)
        return NULL;
    weir_patterns *p = calloc(1, sizeof(*p));
    if (p)
        p->v = calloc(n ? n : 1, sizeof(*p->v));
    bool ok = p && p->v;
    for (size_t i = 0; ok && i < n; i++) {
        pattern *pt = &p->v[p->n];
        const char *s = items[i];
        if (s[0] == '~') {
            int code;
            PCRE2_SIZE off;
            pt->re =
                pcre2_compile((PCRE2_SPTR)(s + 1), PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
            if (!pt->re) {
                PCRE2_UCHAR msg[200];
                pcre2_get_error_message(code, msg, sizeof(msg));
                weir__cfg_err_at(ld, line, "'%s' in [%s]: bad regex '%s': %s at offset %zu", key,
                                 section, s + 1, (const char *)msg, (size_t)off);
                continue;
            }
        } else {
            if (!s[0]) {
                weir__cfg_err_at(ld, line, "'%s' in [%s]: an empty pattern", key, section);
                continue;
            }
            pt->wildcard = strchr(s, '*') != NULL;
            if (!(pt->text = strdup(s))) {
                ok = false;
                break;
            }
        }
        p->n++;
    }
    weir__cfg_free_list(items, n);
    if (!ok) {
        weir__cfg_err_at(ld, line, "out of memory");
        weir__patterns_free(p);
        return NULL;
    }
    return p;
}

/* Glob with '*' only, case-insensitive, iterative with one backtrack point. */
static bool glob(const char *pat, const char *s, size_t len)
{
    size_t si = 0, star_pi = (size_t)-1, star_si = 0, pi = 0;
    size_t pl = strlen(pat);
    while (si < len) {
        if (pi < pl && pat[pi] == '*') {
            star_pi = pi++;
            star_si = si;
        } else if (pi < pl && tolower((unsigned char)pat[pi]) == tolower((unsigned char)s[si])) {
            pi++;
            si++;
        } else if (star_pi != (size_t)-1) {
            pi = star_pi + 1;
            si = ++star_si;
        } else {
            return false;
        }
    }
    while (pi < pl && pat[pi] == '*')
        pi++;
    return pi == pl;
}

/* The patterns run on what a client sends, on every request: a
 * backtracking regex gets at most MATCH_LIMIT steps (about a millisecond)
 * instead of PCRE2's ten million, then counts as undecided. Ample for a
 * sane pattern over an 8 KB header. A context is read-only once made, so
 * one serves every worker. */
#define MATCH_LIMIT 100000

static pthread_once_t mctx_once = PTHREAD_ONCE_INIT;
static pcre2_match_context *mctx;

static void make_mctx(void)
{
    mctx = pcre2_match_context_create(NULL);
    if (mctx)
        pcre2_set_match_limit(mctx, MATCH_LIMIT);
}

bool weir__patterns_match(const weir_patterns *p, weir_str s, bool on_error)
{
    if (!p || !s.ptr)
        return false;
    pthread_once(&mctx_once, make_mctx);
    bool undecided = false;
    for (size_t i = 0; i < p->n; i++) {
        const pattern *pt = &p->v[i];
        if (pt->re) {
            pcre2_match_data *md = weir__thread_match_data();
            int rc = md ? pcre2_match(pt->re, (PCRE2_SPTR)s.ptr, s.len, 0, 0, md, mctx)
                        : PCRE2_ERROR_NOMEMORY;
            if (rc >= 0)
                return true;
            /* The match limit, no memory: this one cannot say; a later
             * pattern still may. */
            undecided |= rc != PCRE2_ERROR_NOMATCH;
        } else if (pt->wildcard) {
            if (glob(pt->text, s.ptr, s.len))
                return true;
        } else if (strlen(pt->text) == s.len && strncasecmp(pt->text, s.ptr, s.len) == 0) {
            return true;
        }
    }
    return undecided ? on_error : false;
}
