/*
 * split.c - cutting a configuration's text into its sections (split.h).
 *
 * A line scanner, not a parser: it tracks what can make a "[" at the start
 * of a line not a header (a multi-line string, an array continued over
 * lines) and reads the header lines themselves.
 */
#include "app/etcd/split.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const named[] = {"servers", "locations", "upstreams", "certificates",
                                    "plugins", "caches",    NULL};

bool weir__cfg_section_named(const char *s)
{
    for (size_t i = 0; named[i]; i++)
        if (strcmp(s, named[i]) == 0)
            return true;
    return false;
}

bool weir__cfg_section_single(const char *s)
{
    return strcmp(s, "basic") == 0 || strcmp(s, "admin") == 0;
}

typedef struct scan {
    const char *t;
    size_t len, i;
    int line;
} scan;

static bool ws(int c)
{
    return c == ' ' || c == '\t';
}

/* Skips a string starting at s->i (a quote), multi-line ones included;
 * false if it does not end (a single-line one at its line's end). */
static bool skip_string(scan *s)
{
    char q = s->t[s->i];
    bool multi = s->i + 2 < s->len && s->t[s->i + 1] == q && s->t[s->i + 2] == q;
    s->i += multi ? 3 : 1;
    while (s->i < s->len) {
        char c = s->t[s->i];
        if (c == '\\' && q == '"' && s->i + 1 < s->len) {
            if (s->t[s->i + 1] == '\n')
                s->line++;
            s->i += 2;
            continue;
        }
        if (c == '\n') {
            if (!multi)
                return false;
            s->line++;
        }
        if (c == q) {
            if (!multi) {
                s->i++;
                return true;
            }
            if (s->i + 2 < s->len && s->t[s->i + 1] == q && s->t[s->i + 2] == q) {
                s->i += 3;
                /* Up to two more quotes belong to the string. */
                while (s->i < s->len && s->t[s->i] == q)
                    s->i++;
                return true;
            }
        }
        s->i++;
    }
    return false;
}

/* Skips a key = value line (and the lines an array or multi-line string
 * carries it over), leaving s->i at the start of the next line. */
static bool skip_line(scan *s)
{
    int depth = 0;
    while (s->i < s->len) {
        char c = s->t[s->i];
        if (c == '"' || c == '\'') {
            if (!skip_string(s))
                return false;
            continue;
        }
        if (c == '#') {
            while (s->i < s->len && s->t[s->i] != '\n')
                s->i++;
            continue;
        }
        if (c == '[' || c == '{')
            depth++;
        else if ((c == ']' || c == '}') && depth > 0)
            depth--;
        s->i++;
        if (c == '\n') {
            s->line++;
            if (depth == 0)
                return true;
        }
    }
    return true;
}

/* One key part of a header at s->i: bare, "basic" (simple escapes) or
 * 'literal'. Returns it malloc'd, or NULL. */
static char *header_part(scan *s)
{
    const char *t = s->t;
    size_t start = s->i;
    if (s->i < s->len && (t[s->i] == '"' || t[s->i] == '\'')) {
        char q = t[s->i++];
        char *out = malloc(s->len - s->i + 1);
        size_t n = 0;
        if (!out)
            return NULL;
        while (s->i < s->len && t[s->i] != q && t[s->i] != '\n') {
            if (q == '"' && t[s->i] == '\\') {
                char e = s->i + 1 < s->len ? t[s->i + 1] : 0;
                if (e != '"' && e != '\\') {
                    free(out); /* \n, \u...: not in a section name */
                    return NULL;
                }
                s->i++;
            }
            out[n++] = t[s->i++];
        }
        if (s->i >= s->len || t[s->i] != q) {
            free(out);
            return NULL;
        }
        s->i++;
        out[n] = '\0';
        return out;
    }
    while (s->i < s->len) {
        char c = t[s->i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            break;
        s->i++;
    }
    if (s->i == start)
        return NULL;
    return strndup(t + start, s->i - start);
}

static void fail(int *err_line, int line, char *err, size_t err_len, const char *msg)
{
    *err_line = line;
    snprintf(err, err_len, "%s", msg);
}

/* Reads the header at s->i ('['): its parts (at most 3). */
static int header(scan *s, char *parts[3], size_t *n_parts, char *err, size_t err_len)
{
    *n_parts = 0;
    s->i++;
    if (s->i < s->len && s->t[s->i] == '[') {
        snprintf(err, err_len, "an array of tables ([[...]]) is not a configuration section");
        return -1;
    }
    for (;;) {
        while (s->i < s->len && ws(s->t[s->i]))
            s->i++;
        char *p = header_part(s);
        if (!p || *n_parts == 3) {
            free(p);
            snprintf(err, err_len, "a header weir cannot read");
            return -1;
        }
        parts[(*n_parts)++] = p;
        while (s->i < s->len && ws(s->t[s->i]))
            s->i++;
        if (s->i < s->len && s->t[s->i] == '.') {
            s->i++;
            continue;
        }
        if (s->i < s->len && s->t[s->i] == ']') {
            s->i++;
            break;
        }
        snprintf(err, err_len, "a header weir cannot read");
        return -1;
    }
    /* The rest of the line: blanks and a comment. */
    while (s->i < s->len && ws(s->t[s->i]))
        s->i++;
    if (s->i < s->len && s->t[s->i] != '\n' && s->t[s->i] != '#' && s->t[s->i] != '\r') {
        snprintf(err, err_len, "text after a header");
        return -1;
    }
    while (s->i < s->len && s->t[s->i] != '\n')
        s->i++;
    if (s->i < s->len) {
        s->i++;
        s->line++;
    }
    return 0;
}

void weir__cfg_sections_free(weir_cfg_section *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].section);
        free(v[i].name);
    }
    free(v);
}

int weir__cfg_split(const char *text, size_t len, bool fragment, weir_cfg_section **out, size_t *n,
                    int *err_line, char *err, size_t err_len)
{
    scan s = {text, len, 0, 1};
    weir_cfg_section *v = NULL;
    size_t nv = 0;
    bool in_bare = false; /* after a [servers]-style header with no name */
    *out = NULL;
    *n = 0;
    while (s.i < s.len) {
        size_t i = s.i, line_start = s.i;
        while (i < s.len && (ws(text[i]) || text[i] == '\r'))
            i++;
        if (i >= s.len)
            break;
        int line = s.line;
        if (text[i] == '\n' || text[i] == '#') {
            s.i = i;
            while (s.i < s.len && text[s.i] != '\n')
                s.i++;
            if (s.i < s.len) {
                s.i++;
                s.line++;
            }
            continue;
        }
        if (text[i] != '[') {
            if (!fragment && (nv == 0 || in_bare)) {
                fail(err_line, line, err, err_len,
                     "keys outside a section: each belongs under its [section] header");
                goto fail;
            }
            s.i = i;
            if (!skip_line(&s)) {
                fail(err_line, line, err, err_len, "a string that does not end");
                goto fail;
            }
            continue;
        }
        if (fragment) {
            fail(err_line, line, err, err_len,
                 "a fragment holds one section's keys: no [header] in it (write a sub-table "
                 "inline: key = { ... })");
            goto fail;
        }
        s.i = i;
        char *parts[3] = {0};
        size_t np = 0;
        char msg[160];
        if (header(&s, parts, &np, msg, sizeof(msg)) != 0) {
            for (size_t k = 0; k < np; k++)
                free(parts[k]);
            fail(err_line, line, err, err_len, msg);
            goto fail;
        }
        bool ok = (np == 1 && weir__cfg_section_single(parts[0])) ||
                  (np == 2 && weir__cfg_section_named(parts[0])) ||
                  (np == 1 && weir__cfg_section_named(parts[0]));
        if (!ok) {
            snprintf(msg, sizeof(msg), "%s",
                     np == 3 || (np == 2 && weir__cfg_section_single(parts[0]))
                         ? "a sub-table header: write the table inline in its section (key = "
                           "{ ... })"
                         : "not a configuration section");
            for (size_t k = 0; k < np; k++)
                free(parts[k]);
            fail(err_line, line, err, err_len, msg);
            goto fail;
        }
        /* Any header ends the body before it ([servers] too). */
        if (nv && v[nv - 1].body_len == SIZE_MAX)
            v[nv - 1].body_len = (size_t)(text + line_start - v[nv - 1].body);
        in_bare = np == 1 && weir__cfg_section_named(parts[0]);
        if (in_bare) {
            free(parts[0]);
            continue;
        }
        weir_cfg_section *nvv = realloc(v, (nv + 1) * sizeof(*v));
        if (!nvv) {
            for (size_t k = 0; k < np; k++)
                free(parts[k]);
            fail(err_line, line, err, err_len, "out of memory");
            goto fail;
        }
        v = nvv;
        v[nv] = (weir_cfg_section){.section = parts[0],
                                   .name = np == 2 ? parts[1] : NULL,
                                   .body = text + s.i,
                                   .body_len = SIZE_MAX,
                                   .line = line};
        nv++;
    }
    if (nv && v[nv - 1].body_len == SIZE_MAX)
        v[nv - 1].body_len = (size_t)(text + s.len - v[nv - 1].body);
    /* The blank lines between sections are nobody's. */
    for (size_t k = 0; k < nv; k++) {
        size_t bl = v[k].body_len;
        while (bl > 1 && v[k].body[bl - 1] == '\n' &&
               (v[k].body[bl - 2] == '\n' ||
                (v[k].body[bl - 2] == '\r' && bl > 2 && v[k].body[bl - 3] == '\n')))
            bl -= v[k].body[bl - 2] == '\r' ? 2 : 1;
        v[k].body_len = bl == 1 && v[k].body[0] == '\n' ? 0 : bl;
    }
    *out = v;
    *n = nv;
    return 0;
fail:
    weir__cfg_sections_free(v, nv);
    return -1;
}
