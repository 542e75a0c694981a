/*
 * read.c - the loader helpers every config section uses (see
 * read.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/config/read.h"
#include "weir/log.h"

/* ---- errors ---- */

void weir__cfg_err_at(loader *ld, int line, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (line > 0)
        weir__cfg_errors_add(ld->errs, "%s:%d: %s", ld->file, line, msg);
    else
        weir__cfg_errors_add(ld->errs, "%s: %s", ld->file, msg);
}

void weir__cfg_warn_at(loader *ld, int line, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (line > 0)
        weir_log(WEIR_LEVEL_WARN, "%s:%d: warning: %s", ld->file, line, msg);
    else
        weir_log(WEIR_LEVEL_WARN, "%s: warning: %s", ld->file, msg);
}

void weir__cfg_errors_add(weir_cfg_errors *errs, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    char **nv = realloc(errs->v, (errs->n + 1) * sizeof(*nv));
    if (!nv) {
        free(msg);
        return;
    }
    errs->v = nv;
    errs->v[errs->n++] = msg;
}

void weir__cfg_errors_free(weir_cfg_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        free(errs->v[i]);
    free(errs->v);
    errs->v = NULL;
    errs->n = 0;
}

/* Edit distance, for "did you mean". Keys are short. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 64;
    size_t d[64][64];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1; /* transposition */
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

/* name when it is closer to key than *best_d (which becomes its distance),
 * else best. */
static const char *closer(const char *key, const char *name, const char *best, size_t *best_d)
{
    size_t d = distance(key, name);
    if (d >= *best_d)
        return best;
    *best_d = d;
    return name;
}

const char *weir__cfg_suggest(const char *key, const char *const *known)
{
    const char *best = NULL;
    size_t best_d = 3; /* only close matches are useful */
    for (size_t i = 0; known[i]; i++)
        best = closer(key, known[i], best, &best_d);
    return best;
}

static bool known_key(const weir_cfg_key *known, const weir_toml_entry *e)
{
    for (size_t k = 0; known[k].name; k++) {
        if (strlen(known[k].name) == e->key_len && memcmp(known[k].name, e->key, e->key_len) == 0)
            return true;
    }
    return false;
}

/* Reports entries of table t whose key is not in known. */
void weir__cfg_check_keys(loader *ld, const weir_toml_value *t, const char *section,
                          const weir_cfg_key *known)
{
    size_t n = weir_toml_table_count(t);
    for (size_t i = 0; i < n; i++) {
        weir_toml_entry e;
        weir_toml_table_entry(t, i, &e);
        if (known_key(known, &e))
            continue;
        const char *best = NULL;
        size_t best_d = 3;
        for (size_t k = 0; known[k].name; k++)
            best = closer(e.key, known[k].name, best, &best_d);
        if (best)
            weir__cfg_err_at(ld, e.line, "unknown key '%s' in [%s]; did you mean '%s'?", e.key,
                             section, best);
        else
            weir__cfg_err_at(ld, e.line, "unknown key '%s' in [%s]", e.key, section);
    }
}

/* ---- typed getters: each reports its own error and returns false ---- */

bool weir__cfg_entry_of(const weir_toml_value *t, const char *key, weir_toml_entry *e)
{
    return weir_toml_table_getn(t, key, strlen(key), e) != NULL;
}

char *weir__cfg_dup_string(loader *ld, const weir_toml_value *t, const char *key,
                           const char *section, bool *present)
{
    weir_toml_entry e;
    *present = weir__cfg_entry_of(t, key, &e);
    if (!*present)
        return NULL;
    size_t len;
    const char *s = weir_toml_string(e.value, &len);
    if (!s) {
        weir__cfg_err_at(ld, e.line, "'%s' in [%s] must be a string, not %s", key, section,
                         weir_toml_type_name(weir_toml_type_of(e.value)));
        return NULL;
    }
    if (strlen(s) != len) {
        weir__cfg_err_at(ld, e.line, "'%s' in [%s] contains a NUL character", key, section);
        return NULL;
    }
    return strdup(s);
}

/* Reads an integer in [min, max]; returns false if absent or invalid. */
bool weir__cfg_get_int(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                       int64_t min, int64_t max, int64_t *out)
{
    weir_toml_entry e;
    if (!weir__cfg_entry_of(t, key, &e))
        return false;
    int64_t v;
    if (!weir_toml_int(e.value, &v)) {
        weir__cfg_err_at(ld, e.line, "'%s' in [%s] must be an integer, not %s", key, section,
                         weir_toml_type_name(weir_toml_type_of(e.value)));
        return false;
    }
    if (v < min || v > max) {
        weir__cfg_err_at(ld, e.line, "'%s' in [%s] is %lld; it must be between %lld and %lld", key,
                         section, (long long)v, (long long)min, (long long)max);
        return false;
    }
    *out = v;
    return true;
}

bool weir__cfg_get_bool(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                        bool *out)
{
    weir_toml_entry e;
    if (!weir__cfg_entry_of(t, key, &e))
        return false;
    if (!weir_toml_bool(e.value, out)) {
        weir__cfg_err_at(ld, e.line, "'%s' in [%s] must be true or false, not %s", key, section,
                         weir_toml_type_name(weir_toml_type_of(e.value)));
        return false;
    }
    return true;
}

/* Parses "250ms", "10s", "5m", "1h" (or a combination like "1m30s"). */
bool weir__cfg_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t total = 0;
    const char *p = s;
    if (!*p)
        return false;
    while (*p) {
        if (*p < '0' || *p > '9')
            return false;
        uint64_t v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (uint64_t)(*p - '0');
            if (v > 1000000000ull)
                return false;
            p++;
        }
        uint64_t unit;
        if (strncmp(p, "ms", 2) == 0) {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = 1000;
            p++;
        } else if (*p == 'm') {
            unit = 60000;
            p++;
        } else if (*p == 'h') {
            unit = 3600000;
            p++;
        } else {
            return false;
        }
        total += v * unit;
    }
    *ms = total;
    return true;
}

/* A duration: a string with units, at most max_ms (and > 0 unless zero_ok). */
bool weir__cfg_get_duration(loader *ld, const weir_toml_value *t, const char *key,
                            const char *section, uint64_t max_ms, bool zero_ok, uint32_t *out)
{
    weir_toml_entry e;
    if (!weir__cfg_entry_of(t, key, &e))
        return false;
    const char *s = weir_toml_string(e.value, NULL);
    uint64_t ms;
    if (!s || !weir__cfg_parse_duration(s, &ms)) {
        weir__cfg_err_at(ld, e.line,
                         "'%s' in [%s] must be a duration like \"10s\", \"500ms\" or \"1m\"", key,
                         section);
        return false;
    }
    if ((!zero_ok && ms == 0) || ms > max_ms) {
        weir__cfg_err_at(ld, e.line, "'%s' in [%s] is out of range (%s%llu ms at most)", key,
                         section, zero_ok ? "" : "more than 0 and ", (unsigned long long)max_ms);
        return false;
    }
    *out = (uint32_t)ms;
    return true;
}

/* A size: an integer of bytes or a string "512", "64KB", "10MB", "1GB". */
bool weir__cfg_get_size(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                        uint64_t max, uint64_t *out)
{
    weir_toml_entry e;
    if (!weir__cfg_entry_of(t, key, &e))
        return false;
    int64_t iv;
    uint64_t v = 0;
    const char *s;
    bool ok = false;
    if (weir_toml_int(e.value, &iv)) {
        ok = iv >= 0;
        v = (uint64_t)iv;
    } else if ((s = weir_toml_string(e.value, NULL))) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(s, &end, 10);
        uint64_t mult = 0;
        if (end != s && !errno && s[0] != '-') {
            if (*end == '\0' || strcasecmp(end, "B") == 0)
                mult = 1;
            else if (strcasecmp(end, "KB") == 0 || strcasecmp(end, "KiB") == 0)
                mult = 1024;
            else if (strcasecmp(end, "MB") == 0 || strcasecmp(end, "MiB") == 0)
                mult = 1024 * 1024;
            else if (strcasecmp(end, "GB") == 0 || strcasecmp(end, "GiB") == 0)
                mult = 1024ull * 1024 * 1024;
        }
        if (mult && n <= UINT64_MAX / mult) {
            v = n * mult;
            ok = true;
        }
    }
    if (!ok) {
        weir__cfg_err_at(ld, e.line,
                         "'%s' in [%s] must be a size like 1048576, \"64KB\" or \"10MB\"", key,
                         section);
        return false;
    }
    if (v > max) {
        weir__cfg_err_at(ld, e.line, "'%s' in [%s] is too large (%llu bytes at most)", key, section,
                         (unsigned long long)max);
        return false;
    }
    *out = v;
    return true;
}

/* A string or an array of strings, as a NULL-free array of copies. */
char **weir__cfg_get_string_list(loader *ld, const weir_toml_value *t, const char *key,
                                 const char *section, size_t *n_out, int *line)
{
    weir_toml_entry e;
    *n_out = 0;
    if (!weir__cfg_entry_of(t, key, &e))
        return NULL;
    *line = e.line;
    const weir_toml_value *v = e.value;
    size_t n = weir_toml_type_of(v) == WEIR_TOML_ARRAY ? weir_toml_array_count(v) : 1;
    char **out = calloc(n ? n : 1, sizeof(char *));
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const weir_toml_value *item =
            weir_toml_type_of(v) == WEIR_TOML_ARRAY ? weir_toml_array_at(v, i) : v;
        size_t len;
        const char *s = weir_toml_string(item, &len);
        if (!s || strlen(s) != len) {
            weir__cfg_err_at(ld, weir_toml_line(item),
                             "'%s' in [%s] must be a string or an array of strings", key, section);
            for (size_t j = 0; j < i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
        if (!(out[i] = strdup(s))) {
            weir__cfg_err_at(ld, weir_toml_line(item), "out of memory");
            weir__cfg_free_list(out, i);
            return NULL;
        }
    }
    *n_out = n;
    return out;
}

void weir__cfg_free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

bool weir__cfg_split_commas(char ***list, size_t *n)
{
    size_t total = 0;
    for (size_t i = 0; i < *n; i++) {
        total++;
        for (const char *p = (*list)[i]; *p; p++)
            total += *p == ',';
    }
    if (total == *n)
        return true;
    char **out = calloc(total, sizeof(*out));
    if (!out)
        return false;
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        const char *p = (*list)[i];
        for (;;) {
            const char *comma = strchr(p, ',');
            const char *end = comma ? comma : p + strlen(p);
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            const char *e = end;
            while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e > p && !(out[k++] = strndup(p, (size_t)(e - p)))) {
                weir__cfg_free_list(out, k - 1);
                return false;
            }
            if (!comma)
                break;
            p = comma + 1;
        }
    }
    weir__cfg_free_list(*list, *n);
    *list = out;
    *n = k;
    return true;
}
