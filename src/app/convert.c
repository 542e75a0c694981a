/*
 * convert.c - `weir convert --from pingap PATH`: a Pingap configuration (one
 * TOML file, or a directory of them: basic.toml, servers.toml, ...) as a
 * weir configuration on stdout. Every key weir has an equivalent for is
 * carried; every other one is written as a comment saying why, so nothing
 * disappears without a word. Run `weir -t` on the result.
 */
#include "app/convert.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "app/plugin/plugin.h"
#include "app/toml/toml.h"

/* The merged document: each file's top-level tables. */
typedef struct doc {
    weir_toml_value *roots[64];
    char *files[64];
    size_t n;
} doc;

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            size_t nc = cap ? cap * 2 : 16384;
            char *nb = realloc(buf, nc);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static bool load_file(doc *d, const char *path, FILE *err)
{
    if (d->n == 64) {
        fprintf(err, "weir convert: more than 64 files\n");
        return false;
    }
    size_t len = 0;
    char *text = read_all(path, &len);
    if (!text) {
        fprintf(err, "weir convert: %s: %s\n", path, strerror(errno));
        return false;
    }
    weir_toml_error te;
    weir_toml_value *root = weir_toml_parse(text, len, &te);
    free(text);
    if (!root) {
        char msg[512];
        weir_toml_error_format(&te, path, msg, sizeof(msg));
        fprintf(err, "%s\n", msg);
        return false;
    }
    d->roots[d->n] = root;
    d->files[d->n] = strdup(path);
    d->n++;
    return true;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool load_path(doc *d, const char *path, FILE *err)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(err, "weir convert: %s: %s\n", path, strerror(errno));
        return false;
    }
    if (!S_ISDIR(st.st_mode))
        return load_file(d, path, err);
    DIR *dir = opendir(path);
    if (!dir) {
        fprintf(err, "weir convert: %s: %s\n", path, strerror(errno));
        return false;
    }
    char *names[64];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && n < 64) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".toml") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(dir);
    qsort(names, n, sizeof(names[0]), by_name);
    bool ok = n > 0;
    if (!ok)
        fprintf(err, "weir convert: no .toml file in %s\n", path);
    for (size_t i = 0; i < n; i++) {
        char full[4096];
        snprintf(full, sizeof(full), "%s/%s", path, names[i]);
        ok = ok && load_file(d, full, err);
        free(names[i]);
    }
    return ok;
}

/* ---- writing TOML ---- */

static void put_string(FILE *o, const char *s, size_t len)
{
    fputc('"', o);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(o, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", o);
        else if (c == '\t')
            fputs("\\t", o);
        else if (c < 0x20 || c == 0x7f)
            fprintf(o, "\\u%04x", c);
        else
            fputc(c, o);
    }
    fputc('"', o);
}

/* A key or a table name: bare when it can be, else quoted. */
static void put_name(FILE *o, const char *k, size_t len)
{
    bool bare = len > 0;
    for (size_t i = 0; i < len && bare; i++) {
        char c = k[i];
        bare = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-';
    }
    if (bare)
        fwrite(k, 1, len, o);
    else
        put_string(o, k, len);
}

static void put_value(FILE *o, const weir_toml_value *v)
{
    size_t len;
    int64_t i;
    double d;
    bool b;
    switch (weir_toml_type_of(v)) {
    case WEIR_TOML_STRING: {
        const char *s = weir_toml_string(v, &len);
        put_string(o, s, len);
        break;
    }
    case WEIR_TOML_INTEGER:
        weir_toml_int(v, &i);
        fprintf(o, "%lld", (long long)i);
        break;
    case WEIR_TOML_FLOAT: {
        char num[40];
        weir_toml_double(v, &d);
        snprintf(num, sizeof(num), "%.17g", d);
        /* 5.0 stays a float ("5" would be an integer). */
        fprintf(o, "%s%s", num, strpbrk(num, ".eEni") ? "" : ".0");
        break;
    }
    case WEIR_TOML_BOOL:
        weir_toml_bool(v, &b);
        fputs(b ? "true" : "false", o);
        break;
    case WEIR_TOML_ARRAY:
        fputc('[', o);
        for (size_t k = 0; k < weir_toml_array_count(v); k++) {
            if (k)
                fputs(", ", o);
            put_value(o, weir_toml_array_at(v, k));
        }
        fputc(']', o);
        break;
    case WEIR_TOML_TABLE: {
        fputc('{', o);
        for (size_t k = 0; k < weir_toml_table_count(v); k++) {
            weir_toml_entry e;
            weir_toml_table_entry(v, k, &e);
            fputs(k ? ", " : "", o);
            put_name(o, e.key, e.key_len);
            fputs(" = ", o);
            put_value(o, e.value);
        }
        fputc('}', o);
        break;
    }
    default:
        fputs("\"?\"", o);
        break;
    }
}

static void put_key(FILE *o, const char *key, const weir_toml_value *v)
{
    fprintf(o, "%s = ", key);
    put_value(o, v);
    fputc('\n', o);
}

/* A key weir does not carry, with the reason. */
static void skip(FILE *o, const weir_toml_entry *e, const char *why)
{
    fprintf(o, "# not converted: %.*s = ", (int)e->key_len, e->key);
    put_value(o, e->value);
    fprintf(o, "  (%s)\n", why);
}

static bool is(const weir_toml_entry *e, const char *key)
{
    return e->key_len == strlen(key) && memcmp(e->key, key, e->key_len) == 0;
}

static const char *str(const weir_toml_value *v)
{
    size_t len;
    return v && weir_toml_type_of(v) == WEIR_TOML_STRING ? weir_toml_string(v, &len) : NULL;
}

/* Keys carried as they are: the same name and meaning in weir. */
static bool same_key(const char *const *keys, const weir_toml_entry *e)
{
    for (const char *const *k = keys; *k; k++) {
        if (is(e, *k))
            return true;
    }
    return false;
}

/* "KEY = VALUE" as in the Pingap file. */
static void copy_entry(FILE *o, const weir_toml_entry *e)
{
    put_name(o, e->key, e->key_len);
    fputs(" = ", o);
    put_value(o, e->value);
    fputc('\n', o);
}

/* "[KIND.NAME]" */
static void section_head(FILE *o, const char *kind, const char *name)
{
    fprintf(o, "[%s.", kind);
    put_name(o, name, strlen(name));
    fputs("]\n", o);
}

/* A key no branch took: a comment, or said to have no equivalent. */
static void skip_other(FILE *o, const weir_toml_entry *e)
{
    skip(o, e, is(e, "remark") ? "a comment" : "no weir equivalent");
}

/* ---- sections ---- */

typedef void (*section_fn)(FILE *o, const doc *d, const weir_toml_value *t, const char *name);

/* Calls fn for every [KIND.NAME] of every file, in file order. */
static void each(FILE *o, const doc *d, const char *kind, section_fn fn)
{
    for (size_t f = 0; f < d->n; f++) {
        const weir_toml_value *sec = weir_toml_table_get(d->roots[f], kind);
        if (!sec || weir_toml_type_of(sec) != WEIR_TOML_TABLE)
            continue;
        for (size_t i = 0; i < weir_toml_table_count(sec); i++) {
            weir_toml_entry e;
            weir_toml_table_entry(sec, i, &e);
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)e.key_len, e.key);
            if (weir_toml_type_of(e.value) == WEIR_TOML_TABLE)
                fn(o, d, e.value, name);
        }
    }
}

static void basic(FILE *o, const doc *d)
{
    static const char *const same[] = {"threads", "pid_file", "upgrade_sock", "grace_period", NULL};
    for (size_t f = 0; f < d->n; f++) {
        const weir_toml_value *t = weir_toml_table_get(d->roots[f], "basic");
        if (!t || weir_toml_type_of(t) != WEIR_TOML_TABLE)
            continue;
        fputs("[basic]\n", o);
        for (size_t i = 0; i < weir_toml_table_count(t); i++) {
            weir_toml_entry e;
            weir_toml_table_entry(t, i, &e);
            const char *s = str(e.value);
            if (same_key(same, &e)) {
                copy_entry(o, &e);
            } else if (is(&e, "log_level") && s) {
                char low[16] = "";
                for (size_t k = 0; s[k] && k < sizeof(low) - 1; k++)
                    low[k] = (char)(s[k] >= 'A' && s[k] <= 'Z' ? s[k] + 32 : s[k]);
                fprintf(o, "log_level = \"%s\"\n", low);
            } else if (is(&e, "name") || is(&e, "remark")) {
                skip(o, &e, "a label: weir has none");
            } else if (is(&e, "cache_directory") || is(&e, "cache_max_size")) {
                skip(o, &e, "the cache plugin's store: [caches.default] below");
            } else {
                skip(o, &e, "no weir equivalent");
            }
        }
        fputc('\n', o);
        /* Pingap's one cache store: a directory (its files), else memory of
         * cache_max_size. */
        const weir_toml_value *dir = weir_toml_table_get(t, "cache_directory");
        const weir_toml_value *max = weir_toml_table_get(t, "cache_max_size");
        if (dir || max) {
            fputs("[caches.default]\n", o);
            if (dir && str(dir)) {
                fprintf(o, "directory = ");
                put_value(o, dir);
                fputc('\n', o);
            }
            if (max) {
                fputs(dir ? "disk_size = " : "memory = ", o);
                put_value(o, max);
                fputc('\n', o);
            }
            fputc('\n', o);
        }
    }
}

/* Every [certificates.NAME] name, for a server's global_certificates. */
static void cert_names(FILE *o, const doc *d)
{
    bool first = true;
    fputc('[', o);
    for (size_t f = 0; f < d->n; f++) {
        const weir_toml_value *sec = weir_toml_table_get(d->roots[f], "certificates");
        for (size_t i = 0; sec && i < weir_toml_table_count(sec); i++) {
            weir_toml_entry e;
            weir_toml_table_entry(sec, i, &e);
            fprintf(o, "%s\"%.*s\"", first ? "" : ", ", (int)e.key_len, e.key);
            first = false;
        }
    }
    fputc(']', o);
}

static void server(FILE *o, const doc *d, const weir_toml_value *t, const char *name)
{
    static const char *const same[] = {"locations", "tls_min_version", "tls_ciphersuites", NULL};
    section_head(o, "servers", name);
    bool h2 = false, tls = false;
    for (size_t i = 0; i < weir_toml_table_count(t); i++) {
        weir_toml_entry e;
        weir_toml_table_entry(t, i, &e);
        bool b = false;
        if (is(&e, "enabled_h2"))
            weir_toml_bool(e.value, &h2);
        if (is(&e, "global_certificates") && weir_toml_bool(e.value, &b) && b)
            tls = true;
    }
    for (size_t i = 0; i < weir_toml_table_count(t); i++) {
        weir_toml_entry e;
        weir_toml_table_entry(t, i, &e);
        const char *s = str(e.value);
        if (same_key(same, &e)) {
            copy_entry(o, &e);
        } else if (is(&e, "addr") && s) {
            /* "a:1,b:2" is two listeners. */
            fputs("addr = [", o);
            const char *p = s;
            bool first = true;
            while (*p) {
                const char *c = strchr(p, ',');
                size_t l = c ? (size_t)(c - p) : strlen(p);
                while (l && *p == ' ') {
                    p++;
                    l--;
                }
                while (l && p[l - 1] == ' ')
                    l--;
                if (l) {
                    fputs(first ? "" : ", ", o);
                    put_string(o, p, l);
                    first = false;
                }
                p = c ? c + 1 : p + strlen(p);
            }
            fputs("]\n", o);
        } else if (is(&e, "access_log") && s) {
            /* "/var/log/x.log {when} {path}": a file, then the format. */
            const char *sp = strchr(s, ' ');
            if (s[0] == '/' && sp) {
                fputs("access_log_file = ", o);
                put_string(o, s, (size_t)(sp - s));
                fputs("\naccess_log = ", o);
                put_string(o, sp + 1, strlen(sp + 1));
                fputc('\n', o);
            } else if (s[0] == '/') {
                fputs("access_log_file = ", o);
                put_string(o, s, strlen(s));
                fputs("\naccess_log = \"main\"\n", o);
            } else {
                put_key(o, "access_log", e.value);
            }
        } else if (is(&e, "global_certificates")) {
            if (tls) {
                fputs("certificates = ", o);
                cert_names(o, d);
                fputc('\n', o);
            }
        } else if (is(&e, "enabled_h2")) {
            if (!tls && h2)
                fputs("h2c = true\n", o);
            else if (tls && !h2)
                fputs("alpn = [\"http/1.1\"]\n", o);
        } else if (is(&e, "tls_cipher_list")) {
            put_key(o, "tls_ciphers", e.value);
        } else if (is(&e, "downstream_read_timeout")) {
            put_key(o, "client_header_timeout", e.value);
        } else if (is(&e, "downstream_write_timeout")) {
            put_key(o, "send_timeout", e.value);
        } else if (is(&e, "prometheus_metrics")) {
            skip(o, &e, "weir serves /metrics on the [admin] listener");
        } else if (is(&e, "threads") || is(&e, "reuse_port")) {
            skip(o, &e, "weir's workers serve every server ([basic] threads; SO_REUSEPORT always)");
        } else {
            skip_other(o, &e);
        }
    }
    fputc('\n', o);
}

static void location(FILE *o, const doc *d, const weir_toml_value *t, const char *name)
{
    static const char *const same[] = {"upstream",
                                       "host",
                                       "path",
                                       "rewrite",
                                       "weight",
                                       "proxy_set_headers",
                                       "proxy_add_headers",
                                       "client_max_body_size",
                                       NULL};
    section_head(o, "locations", name);
    for (size_t i = 0; i < weir_toml_table_count(t); i++) {
        weir_toml_entry e;
        weir_toml_table_entry(t, i, &e);
        if (same_key(same, &e)) {
            copy_entry(o, &e);
        } else if (is(&e, "plugins") && weir_toml_type_of(e.value) == WEIR_TOML_ARRAY) {
            /* Only those the conversion keeps (see plugin()). */
            fputs("plugins = [", o);
            bool first = true;
            char dropped[512] = "";
            size_t dl = 0;
            for (size_t k = 0; k < weir_toml_array_count(e.value); k++) {
                const char *pn = str(weir_toml_array_at(e.value, k));
                bool known = false;
                for (size_t f = 0; pn && f < d->n && !known; f++) {
                    const weir_toml_value *ps = weir_toml_table_get(d->roots[f], "plugins");
                    const weir_toml_value *p = ps ? weir_toml_table_get(ps, pn) : NULL;
                    const char *cat = p ? str(weir_toml_table_get(p, "category")) : NULL;
                    known = cat && weir__plugin_def(cat) && weir__plugin_def(cat)->parse;
                }
                if (!known) {
                    if (dl < sizeof(dropped))
                        dl += (size_t)snprintf(dropped + dl, sizeof(dropped) - dl, "%s%s",
                                               dl ? ", " : "", pn ? pn : "?");
                    continue;
                }
                fprintf(o, "%s\"%s\"", first ? "" : ", ", pn);
                first = false;
            }
            fputs("]\n", o);
            if (dl)
                fprintf(o, "# not converted: plugins %s (see their [plugins.NAME] above)\n",
                        dropped);
        } else if (is(&e, "enable_reverse_proxy_headers")) {
            bool on = true;
            weir_toml_bool(e.value, &on);
            if (on)
                skip(o, &e,
                     "weir sends X-Forwarded-For, X-Real-IP and X-Forwarded-Proto by default");
            else /* Pingap adds none of weir's five then */
                fputs("proxy_added_headers = []\n", o);
        } else if (is(&e, "max_retries") || is(&e, "max_retry_window")) {
            skip(o, &e, "retries are the upstream's in weir: max_retries, retry_timeout");
        } else {
            skip_other(o, &e);
        }
    }
    fputc('\n', o);
}

static void upstream(FILE *o, const doc *d, const weir_toml_value *t, const char *name)
{
    static const char *const same[] = {"addrs",
                                       "health_check",
                                       "connection_timeout",
                                       "total_connection_timeout",
                                       "read_timeout",
                                       "write_timeout",
                                       "idle_timeout",
                                       "verify_cert",
                                       NULL};
    section_head(o, "upstreams", name);
    /* Pingap's default is "static": names resolved once, at load. */
    const char *disc = str(weir_toml_table_get(t, "discovery"));
    bool dns = disc && strcasecmp(disc, "dns") == 0;
    for (size_t i = 0; i < weir_toml_table_count(t); i++) {
        weir_toml_entry e;
        weir_toml_table_entry(t, i, &e);
        const char *s = str(e.value);
        if (same_key(same, &e)) {
            copy_entry(o, &e);
        } else if (is(&e, "algo") && s) {
            /* Pingap's hash:KEY is consistent hashing: weir's hash:KEY. */
            put_key(o, "algo", e.value);
        } else if (is(&e, "sni")) {
            fputs("tls = true\n", o);
            put_key(o, "sni", e.value);
        } else if (is(&e, "alpn") && s) {
            const char *a = strcasecmp(s, "h2") == 0     ? "h2"
                            : strcasecmp(s, "h2h1") == 0 ? "h2,h1"
                                                         : "h1";
            fprintf(o, "alpn = \"%s\"\n", a);
        } else if (is(&e, "discovery")) {
            if (dns || (s && (strcasecmp(s, "static") == 0 || strcasecmp(s, "common") == 0)))
                put_key(o, "discovery", e.value);
            else
                skip(o, &e,
                     "only \"static\" and \"dns\" discovery are in weir: addrs stay as "
                     "they are");
        } else if (is(&e, "update_frequency") || is(&e, "dns_server") || is(&e, "dns_domain") ||
                   is(&e, "dns_search") || is(&e, "ipv4_only")) {
            if (dns)
                copy_entry(o, &e);
            else
                skip(o, &e, "only with discovery = \"dns\"");
        } else if (strncmp(e.key, "tcp_", 4) == 0) {
            skip(o, &e, "TCP tuning: weir's defaults apply");
        } else {
            skip_other(o, &e);
        }
    }
    fputc('\n', o);
}

static void certificate(FILE *o, const doc *d, const weir_toml_value *t, const char *name)
{
    section_head(o, "certificates", name);
    for (size_t i = 0; i < weir_toml_table_count(t); i++) {
        weir_toml_entry e;
        weir_toml_table_entry(t, i, &e);
        const char *s = str(e.value);
        if ((is(&e, "tls_cert") || is(&e, "tls_key") || is(&e, "tls_chain")) && s) {
            const char *key = is(&e, "tls_cert") ? "cert" : is(&e, "tls_key") ? "key" : "chain";
            if (strstr(s, "-----BEGIN") || !strchr(s, '/'))
                fprintf(o,
                        "# not converted: %.*s holds the PEM (or base64) itself: write it to a "
                        "file and set %s = \"/path/to/it\"\n",
                        (int)e.key_len, e.key, key);
            else
                put_key(o, key, e.value);
        } else if (is(&e, "domains")) {
            put_key(o, "domains", e.value);
        } else if (is(&e, "is_default")) {
            put_key(o, "default", e.value);
        } else if (is(&e, "acme")) {
            skip(o, &e, "ACME is not in weir yet: issue the certificate outside");
        } else {
            skip_other(o, &e);
        }
    }
    fputc('\n', o);
}

static void plugin(FILE *o, const doc *d, const weir_toml_value *t, const char *name)
{
    const char *cat = str(weir_toml_table_get(t, "category"));
    const weir_plugin_def *def = cat ? weir__plugin_def(cat) : NULL;
    if (!def || !def->parse) {
        fprintf(o,
                "# [plugins.%s]: category \"%s\" is not in weir yet; the locations that list "
                "it run without it\n",
                name, cat ? cat : "?");
        for (size_t i = 0; i < weir_toml_table_count(t); i++) {
            weir_toml_entry e;
            weir_toml_table_entry(t, i, &e);
            fprintf(o, "#   %.*s = ", (int)e.key_len, e.key);
            put_value(o, e.value);
            fputc('\n', o);
        }
        fputc('\n', o);
        return;
    }
    section_head(o, "plugins", name);
    for (size_t i = 0; i < weir_toml_table_count(t); i++) {
        weir_toml_entry e;
        weir_toml_table_entry(t, i, &e);
        bool known = is(&e, "category") || is(&e, "step");
        for (const weir_cfg_key *k = def->keys; !known && k && k->name; k++)
            known = is(&e, k->name);
        bool cache = strcmp(cat, "cache") == 0;
        if (known) {
            copy_entry(o, &e);
        } else if (cache && is(&e, "headers")) {
            put_key(o, "key_headers", e.value); /* Pingap's: key parts */
        } else if (cache && (is(&e, "eviction") || is(&e, "predictor"))) {
            skip(o, &e, "weir's store always evicts (S3-FIFO) and locks per key");
        } else if (is(&e, "remark")) {
            skip(o, &e, "a comment");
        } else {
            skip(o, &e, "not a key of weir's plugin");
        }
    }
    fputc('\n', o);
}

int weir__convert_pingap(const char *path, FILE *out, FILE *err)
{
    doc d = {0};
    bool ok = load_path(&d, path, err);
    if (ok) {
        fprintf(out, "# weir configuration converted from the Pingap configuration %s\n", path);
        fputs("# by `weir convert --from pingap`. Check it with `weir -t -c FILE`; every\n"
              "# \"not converted\" comment is a setting that needs a look.\n\n",
              out);
        basic(out, &d);
        each(out, &d, "certificates", certificate);
        each(out, &d, "upstreams", upstream);
        each(out, &d, "plugins", plugin);
        each(out, &d, "locations", location);
        each(out, &d, "servers", server);
        for (size_t f = 0; f < d.n; f++) {
            for (size_t i = 0; i < weir_toml_table_count(d.roots[f]); i++) {
                weir_toml_entry e;
                weir_toml_table_entry(d.roots[f], i, &e);
                static const char *const known[] = {
                    "basic", "servers", "locations", "upstreams", "certificates", "plugins", NULL};
                if (!same_key(known, &e))
                    fprintf(out, "# not converted: [%.*s] of %s (no weir equivalent)\n",
                            (int)e.key_len, e.key, d.files[f]);
            }
        }
    }
    for (size_t i = 0; i < d.n; i++) {
        weir_toml_free(d.roots[i]);
        free(d.files[i]);
    }
    return ok ? 0 : 1;
}
