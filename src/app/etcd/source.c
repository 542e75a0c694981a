/*
 * source.c - the configuration from etcd (see source.h).
 *
 * The keys are held as one sorted set: the watch thread applies each
 * batch of changes to its own copy and hands a copy of the whole set to
 * the main thread, newest wins (a burst of writes is one reload). The
 * main thread turns a set into TOML text, one synthetic [section.NAME]
 * header per key followed by the key's value, remembers which lines came
 * from which key, loads it, and on errors names the key and the line in
 * the value instead of the line of the text.
 */
#include "app/etcd/source.h"

#include "app/admin/toml_edit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/etcd/split.h"
#include "app/strbuf.h"
#include "app/toml/toml.h"

bool weir__is_etcd_url(const char *s)
{
    return strncmp(s, "etcd://", 7) == 0 || strncmp(s, "etcds://", 8) == 0;
}

/* ---- the URL ---- */

void weir__etcd_url_free(weir_etcd_url *u)
{
    for (size_t i = 0; i < u->n_endpoints; i++)
        free(u->endpoints[i]);
    free(u->endpoints);
    free(u->prefix);
    free(u->user);
    if (u->password)
        explicit_bzero(u->password, strlen(u->password));
    free(u->password);
    memset(u, 0, sizeof(*u));
}

/* %XX-decoded copy of s[0..n). */
static char *unescape(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; out && i < n; i++) {
        unsigned v;
        if (s[i] == '%' && i + 2 < n && sscanf(s + i + 1, "%2x", &v) == 1) {
            out[k++] = (char)v;
            i += 2;
        } else {
            out[k++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    if (out)
        out[k] = '\0';
    return out;
}

char *weir__etcd_url_masked(const char *url)
{
    weir_strbuf b = {0};
    const char *q = strchr(url, '?');
    weir__sb_put(&b, url, q ? (size_t)(q - url) : strlen(url));
    for (const char *a = q; a && *a;) {
        const char *amp = strchr(a + 1, '&');
        size_t n = amp ? (size_t)(amp - a) : strlen(a);
        if (n >= 10 && strncmp(a + 1, "password=", 9) == 0) {
            weir__sb_put(&b, a, 10);
            weir__sb_puts(&b, "***");
        } else {
            weir__sb_put(&b, a, n);
        }
        a = amp;
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p ? b.p : strdup("");
}

#define MAX_PREFIX 256   /* keys stay short: a prefix, a section, a name of 200 */
#define MAX_ENDPOINT 256 /* host:port */

/* Parses in; messages name url (in with its password masked). */
static int url_parse(const char *in, const char *url, weir_etcd_url *u, char *err, size_t err_len)
{
    bool tls = strncmp(in, "etcds://", 8) == 0;
    const char *p = in + (tls ? 8 : 7);
    const char *slash = strchr(p, '/');
    const char *q = strchr(p, '?');
    if (!slash || (q && q < slash)) {
        snprintf(err, err_len, "%s: the URL needs a prefix: etcd://HOST:PORT[,HOST:PORT]/PREFIX",
                 url);
        return -1;
    }
    size_t plen = q ? (size_t)(q - slash) : strlen(slash);
    while (plen > 1 && slash[plen - 1] == '/')
        plen--;
    if (plen <= 1) {
        snprintf(err, err_len, "%s: the prefix is empty", url);
        return -1;
    }
    if (plen > MAX_PREFIX) {
        snprintf(err, err_len, "%.60s...: the prefix is longer than %d bytes", url, MAX_PREFIX);
        return -1;
    }
    if (slash > p && slash[-1] == ',') {
        snprintf(err, err_len, "%s: an empty endpoint after ','", url);
        return -1;
    }
    u->prefix = strndup(slash, plen);
    for (const char *h = p; h < slash;) {
        const char *comma = memchr(h, ',', (size_t)(slash - h));
        const char *end = comma ? comma : slash;
        size_t n = (size_t)(end - h);
        const char *colon = memchr(h, ':', n);
        if (n == 0 || n > MAX_ENDPOINT || !colon || colon == h || colon + 1 == end) {
            snprintf(err, err_len, "%s: each endpoint is HOST:PORT", url);
            goto fail;
        }
        char **nv = realloc(u->endpoints, (u->n_endpoints + 1) * sizeof(char *));
        if (!nv)
            goto oom;
        u->endpoints = nv;
        if (asprintf(&u->endpoints[u->n_endpoints], "%s://%.*s", tls ? "https" : "http", (int)n,
                     h) < 0)
            goto oom;
        u->n_endpoints++;
        h = comma ? comma + 1 : slash;
    }
    if (u->n_endpoints == 0) {
        snprintf(err, err_len, "%s: no endpoint", url);
        goto fail;
    }
    for (const char *a = q ? q + 1 : NULL; a && *a;) {
        const char *amp = strchr(a, '&');
        size_t n = amp ? (size_t)(amp - a) : strlen(a);
        const char *eq = memchr(a, '=', n);
        if (!eq) {
            snprintf(err, err_len, "%s: a query parameter without '='", url);
            goto fail;
        }
        char *v = unescape(eq + 1, (size_t)(a + n - eq - 1));
        if (!v)
            goto oom;
        bool is_user = (size_t)(eq - a) == 4 && strncmp(a, "user", 4) == 0;
        bool is_password = (size_t)(eq - a) == 8 && strncmp(a, "password", 8) == 0;
        if ((is_user && u->user) || (is_password && u->password)) {
            free(v);
            snprintf(err, err_len, "%s: '%.*s' is given twice", url, (int)(eq - a), a);
            goto fail;
        }
        if (is_user) {
            u->user = v;
        } else if (is_password) {
            u->password = v;
        } else {
            free(v);
            snprintf(err, err_len, "%s: unknown parameter '%.*s' (user, password)", url,
                     (int)(eq - a), a);
            goto fail;
        }
        a = amp ? amp + 1 : NULL;
    }
    if (!u->user != !u->password) {
        snprintf(err, err_len, "%s: user and password go together", url);
        goto fail;
    }
    return 0;
oom:
    snprintf(err, err_len, "out of memory");
fail:
    weir__etcd_url_free(u);
    return -1;
}

int weir__etcd_url_parse(const char *url, weir_etcd_url *u, char *err, size_t err_len)
{
    memset(u, 0, sizeof(*u));
    char *masked = weir__etcd_url_masked(url);
    if (!masked) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int rc = url_parse(url, masked, u, err, err_len);
    free(masked);
    return rc;
}

weir_etcd *weir__etcd_connect(const weir_etcd_url *u, const char *cacert, const char *cert,
                              const char *key, uint32_t timeout_ms, char *err, size_t err_len)
{
    weir_etcd_options o = {
        .endpoints = (const char *const *)u->endpoints,
        .n_endpoints = u->n_endpoints,
        .user = u->user,
        .password = u->password,
        .cacert = cacert,
        .cert = cert,
        .key = key,
        .timeout_ms = timeout_ms,
    };
    return weir__etcd_new(&o, err, err_len);
}

/* ---- text from keys ---- */

/* Lines first..last of the text came from `where`: the header line
 * (first) names no line, the others are line L - first of the value;
 * a local file's lines map one to one (base 1). */
typedef struct map_span {
    int first, last;
    char *where;
    bool local;
} map_span;

struct weir_etcd_map {
    map_span *v;
    size_t n;
    char *name; /* the source, for errors of no line */
};

void weir__etcd_map_free(weir_etcd_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->v[i].where);
    free(m->v);
    free(m->name);
    free(m);
}

static int count_lines(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == '\n';
    return k;
}

static bool map_add(weir_etcd_map *m, int first, int last, const char *where, bool local)
{
    map_span *nv = realloc(m->v, (m->n + 1) * sizeof(*nv));
    if (!nv)
        return false;
    m->v = nv;
    m->v[m->n] = (map_span){first, last, strdup(where), local};
    return m->v[m->n++].where != NULL;
}

/* A section name as a TOML key: quoted, or NULL when it cannot be one. */
bool weir__etcd_fleet_key(const char *rest, size_t len)
{
    static const char *const dirs[] = {"instances/", "locks/", "acme/", "history/", NULL};
    for (size_t i = 0; dirs[i]; i++) {
        size_t n = strlen(dirs[i]);
        if (len > n && memcmp(rest, dirs[i], n) == 0)
            return true;
    }
    return false;
}

bool weir__etcd_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 200)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\' || c == '/')
            return false;
    }
    return true;
}

/* The keys of [basic] that reach etcd: an instance's own. */
static const char *const local_only[] = {"etcd_cacert", "etcd_cert",    "etcd_key", "config_cache",
                                         "instance_id", "instance_ttl", NULL};

/* Whether the local file defines section.name. */
static bool local_has(const weir_cfg_section *v, size_t n, const char *section, const char *name,
                      size_t name_len)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].section, section) != 0)
            continue;
        if (!name && !v[i].name)
            return true;
        if (name && v[i].name && strlen(v[i].name) == name_len &&
            memcmp(v[i].name, name, name_len) == 0)
            return true;
    }
    return false;
}

char *weir__etcd_assemble(const weir_etcd_kvs *kvs, const char *prefix, const char *url,
                          const char *local_path, const char *local_text, size_t local_len,
                          bool header, size_t *len, weir_etcd_map **map_out, weir_cfg_errors *errs)
{
    size_t errs_before = errs->n;
    weir_etcd_map *m = calloc(1, sizeof(*m));
    weir_strbuf b = {0};
    weir_cfg_section *loc = NULL;
    size_t n_loc = 0;
    if (!m || !(m->name = strdup(url)))
        goto oom;
    int line = 1;
    if (header) {
        weir__sb_printf(&b, "# weir config from %s at revision %" PRId64 "\n", url, kvs->revision);
        line++;
    }
    if (local_text) {
        int el;
        char msg[200];
        if (weir__cfg_split(local_text, local_len, false, &loc, &n_loc, &el, msg, sizeof(msg)) !=
            0) {
            weir__cfg_errors_add(errs, "%s:%d: %s", local_path, el, msg);
        } else {
            int nl = count_lines(local_text, local_len);
            weir__sb_put(&b, local_text, local_len);
            if (local_len && local_text[local_len - 1] != '\n') {
                weir__sb_put(&b, "\n", 1);
                nl++;
            }
            if (!map_add(m, line, line + nl - 1, local_path, true))
                goto oom;
            line += nl;
        }
    }
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < kvs->n; i++) {
        const weir_etcd_kv *kv = &kvs->v[i];
        if (kv->key_len <= plen + 1 || memcmp(kv->key, prefix, plen) != 0 || kv->key[plen] != '/')
            continue;
        const char *rest = kv->key + plen + 1;
        size_t rlen = kv->key_len - plen - 1;
        if (weir__etcd_fleet_key(rest, rlen))
            continue; /* the fleet's */
        const char *slash = memchr(rest, '/', rlen);
        char section[32];
        size_t slen = slash ? (size_t)(slash - rest) : rlen;
        const char *name = slash ? slash + 1 : NULL;
        size_t name_len = slash ? rlen - slen - 1 : 0;
        if (memchr(rest, '\0', slen)) {
            weir__cfg_errors_add(errs, "%s...: not a configuration key (it holds a NUL byte)",
                                 kv->key);
            continue;
        }
        if (slen >= sizeof(section)) {
            weir__cfg_errors_add(errs, "%s: not a configuration key", kv->key);
            continue;
        }
        memcpy(section, rest, slen);
        section[slen] = '\0';
        bool named = weir__cfg_section_named(section), single = weir__cfg_section_single(section);
        if ((named && !name) || (single && name) || (!named && !single)) {
            weir__cfg_errors_add(
                errs,
                "%s: not a configuration key (under %s/: servers/NAME, locations/NAME, "
                "upstreams/NAME, certificates/NAME, plugins/NAME, caches/NAME, basic, "
                "admin; instances/, locks/ and acme/ are the fleet's)",
                kv->key, prefix);
            continue;
        }
        if (name && !weir__etcd_name_ok(name, name_len)) {
            weir__cfg_errors_add(
                errs, "%s: a section name has no '/', quote, backslash or control character",
                kv->key);
            continue;
        }
        if (memchr(kv->value, '\0', kv->value_len)) {
            weir__cfg_errors_add(errs, "%s: the value holds a NUL byte", kv->key);
            continue;
        }
        if (local_has(loc, n_loc, section, name, name_len))
            continue; /* the instance's own replaces it */
        /* The value alone: its syntax errors at its own lines, and no
         * header that would put its keys into another section. */
        int el;
        char msg[200];
        weir_cfg_section *none = NULL;
        size_t n_none = 0;
        if (weir__cfg_split(kv->value, kv->value_len, true, &none, &n_none, &el, msg,
                            sizeof(msg)) != 0) {
            weir__cfg_errors_add(errs, "%s:%d: %s", kv->key, el, msg);
            continue;
        }
        weir_toml_error te;
        weir_toml_value *doc = weir_toml_parse(kv->value, kv->value_len, &te);
        if (!doc) {
            weir__cfg_errors_add(errs, "%s:%d:%d: %s", kv->key, te.line, te.column, te.message);
            continue;
        }
        if (strcmp(section, "basic") == 0) {
            for (size_t k = 0; local_only[k]; k++) {
                weir_toml_entry e;
                if (weir_toml_table_getn(doc, local_only[k], strlen(local_only[k]), &e))
                    weir__cfg_errors_add(
                        errs,
                        "%s:%d: '%s' is the instance's own: set it in [basic] of its "
                        "--local file",
                        kv->key, e.line, local_only[k]);
            }
        }
        weir_toml_free(doc);
        bool bare = true;
        for (size_t k = 0; name && k < name_len; k++) {
            char ch = name[k];
            bare = bare && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                            (ch >= '0' && ch <= '9') || ch == '_' || ch == '-');
        }
        if (name)
            weir__sb_printf(&b, bare ? "[%s.%.*s]\n" : "[%s.\"%.*s\"]\n", section, (int)name_len,
                            name);
        else
            weir__sb_printf(&b, "[%s]\n", section);
        int nl = count_lines(kv->value, kv->value_len);
        weir__sb_put(&b, kv->value, kv->value_len);
        if (kv->value_len && kv->value[kv->value_len - 1] != '\n') {
            weir__sb_put(&b, "\n", 1);
            nl++;
        }
        if (!map_add(m, line, line + nl, kv->key, false))
            goto oom;
        weir__sb_put(&b, "\n", 1);
        line += nl + 2;
    }
    if (b.oom)
        goto oom;
    weir__cfg_sections_free(loc, n_loc);
    if (errs->n > errs_before) {
        free(b.p);
        weir__etcd_map_free(m);
        return NULL;
    }
    if (!b.p)
        weir__sb_put(&b, "", 0);
    if (b.oom)
        goto oom;
    *len = b.len;
    if (map_out)
        *map_out = m;
    else
        weir__etcd_map_free(m);
    return b.p;
oom:
    weir__cfg_errors_add(errs, "out of memory");
    weir__cfg_sections_free(loc, n_loc);
    free(b.p);
    weir__etcd_map_free(m);
    return NULL;
}

void weir__etcd_map_errors(const weir_etcd_map *m, weir_cfg_errors *errs)
{
    size_t pre = strlen(WEIR_ETCD_TEXT_NAME);
    for (size_t i = 0; m && i < errs->n; i++) {
        const char *e = errs->v[i];
        if (strncmp(e, WEIR_ETCD_TEXT_NAME, pre) != 0)
            continue;
        const char *rest = e + pre;
        char *end = NULL;
        long line = *rest == ':' ? strtol(rest + 1, &end, 10) : 0;
        char *nv = NULL;
        const map_span *s = NULL;
        for (size_t k = 0; line > 0 && k < m->n; k++)
            if (line >= m->v[k].first && line <= m->v[k].last)
                s = &m->v[k];
        if (!s) {
            if (asprintf(&nv, "%s%s", m->name, rest) < 0)
                continue;
        } else if (s->local) {
            if (asprintf(&nv, "%s:%ld%s", s->where, line - s->first + 1, end) < 0)
                continue;
        } else if (line == s->first) {
            /* The header line: the section as a whole; drop a column. */
            const char *msg = end;
            if (*msg == ':' && msg[1] >= '0' && msg[1] <= '9') {
                msg++;
                while (*msg >= '0' && *msg <= '9')
                    msg++;
            }
            if (asprintf(&nv, "%s%s", s->where, msg) < 0)
                continue;
        } else if (asprintf(&nv, "%s:%ld%s", s->where, line - s->first, end) < 0) {
            continue;
        }
        free(errs->v[i]);
        errs->v[i] = nv;
    }
}

/* ---- the cache file ---- */

int weir__etcd_read_cache(const char *path, const char *prefix, weir_etcd_kvs *out, char *err,
                          size_t err_len)
{
    memset(out, 0, sizeof(*out));
    size_t len = 0;
    char *text = weir__admin_read_file(path, &len, err, err_len);
    if (!text)
        return -1;
    const char *at = strstr(text, " at revision ");
    if (at && at < strchr(text, '\n'))
        out->revision = strtoll(at + 13, NULL, 10);
    weir_cfg_section *v = NULL;
    size_t n = 0;
    int el;
    char msg[200];
    if (weir__cfg_split(text, len, false, &v, &n, &el, msg, sizeof(msg)) != 0) {
        snprintf(err, err_len, "%s:%d: %s", path, el, msg);
        free(text);
        return -1;
    }
    out->v = calloc(n ? n : 1, sizeof(*out->v));
    for (size_t i = 0; out->v && i < n; i++) {
        weir_etcd_kv *kv = &out->v[out->n];
        int kn = v[i].name ? asprintf(&kv->key, "%s/%s/%s", prefix, v[i].section, v[i].name)
                           : asprintf(&kv->key, "%s/%s", prefix, v[i].section);
        kv->value = strndup(v[i].body, v[i].body_len);
        if (kn < 0 || !kv->value) {
            free(kv->value);
            break;
        }
        kv->key_len = (size_t)kn;
        kv->value_len = v[i].body_len;
        out->n++;
    }
    bool ok = out->v && out->n == n;
    weir__cfg_sections_free(v, n);
    free(text);
    if (!ok) {
        weir__etcd_kvs_free(out);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    return 0;
}
