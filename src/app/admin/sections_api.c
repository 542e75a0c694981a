/*
 * sections_api.c - one section of the configuration at a time through
 * the admin API (docs/admin-api.md): GET, PUT (create or replace) and
 * DELETE /api/config/sections/KIND[/NAME], the values as JSON.
 *
 * With a file, the section's lines are replaced (the rest of the file
 * stays byte for byte) and the file applied as PUT /api/config/file does.
 * With etcd, the section is its key /PREFIX/KIND[/NAME]: checked to load
 * with the running keys, then written or deleted with a compare-and-swap
 * on its mod revision; every instance applies it from the watch. Main
 * thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/admin/admin.h"
#include "app/admin/toml_edit.h"
#include "app/etcd/etcd.h"
#include "app/etcd/source.h"
#include "app/strbuf.h"
#include "app/toml/toml.h"

#define DEPTH_MAX 16

static const char *const named[] = {"servers", "locations",    "upstreams",
                                    "plugins", "certificates", "caches"};

bool weir__admin_section_kind(const char *kind, bool *has_name)
{
    *has_name = true;
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++)
        if (strcmp(kind, named[i]) == 0)
            return true;
    *has_name = false;
    return strcmp(kind, "basic") == 0 || strcmp(kind, "admin") == 0;
}

static json_t *err_json(const char *msg)
{
    return json_pack("{s:o}", "error", weir__admin_text_json(msg, strlen(msg)));
}

/* With etcd: the key's value and mod revision as etcd holds them now (a
 * change this instance refused is what the caller must see to fix it),
 * and whether the --local file has the section. -1 with *out set when
 * etcd cannot be read. */
static int etcd_value(weir_etcd_source *etcd, const char *kind, const char *name, char **value,
                      int64_t *mod, bool *local, json_t **out)
{
    int64_t running_mod;
    free(weir__etcd_source_value(etcd, kind, name, &running_mod, local));
    char err[600];
    *value = weir__etcd_source_fresh(etcd, kind, name, mod, err, sizeof(err));
    if (!*value && err[0]) {
        char msg[800];
        snprintf(msg, sizeof(msg), "etcd cannot be read (%s)", err);
        *out = err_json(msg);
        return -1;
    }
    return 0;
}

/* ---- TOML <-> JSON ---- */

static json_t *to_json(const weir_toml_value *v)
{
    size_t n;
    const char *s;
    int64_t i;
    bool b;
    double d;
    switch (weir_toml_type_of(v)) {
    case WEIR_TOML_TABLE: {
        json_t *o = json_object();
        for (size_t k = 0; o && k < weir_toml_table_count(v); k++) {
            weir_toml_entry e;
            weir_toml_table_entry(v, k, &e);
            json_object_setn_new(o, e.key, e.key_len, to_json(e.value));
        }
        return o;
    }
    case WEIR_TOML_ARRAY: {
        json_t *a = json_array();
        for (size_t k = 0; a && k < weir_toml_array_count(v); k++)
            json_array_append_new(a, to_json(weir_toml_array_at(v, k)));
        return a;
    }
    case WEIR_TOML_STRING:
        s = weir_toml_string(v, &n);
        return json_stringn(s, n);
    case WEIR_TOML_INTEGER:
        return weir_toml_int(v, &i) ? json_integer(i) : json_null();
    case WEIR_TOML_BOOL:
        return weir_toml_bool(v, &b) ? json_boolean(b) : json_null();
    case WEIR_TOML_FLOAT:
        return weir_toml_double(v, &d) && isfinite(d) ? json_real(d) : json_null();
    default: /* dates: weir has none */
        return json_null();
    }
}

static bool bare(const char *k, size_t n)
{
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* A TOML basic string. */
static void put_string(weir_strbuf *b, const char *s, size_t n)
{
    weir__sb_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            weir__sb_put(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            weir__sb_printf(b, "\\u%04x", c);
        } else {
            weir__sb_put(b, s + i, 1);
        }
    }
    weir__sb_put(b, "\"", 1);
}

static void put_key(weir_strbuf *b, const char *k, size_t n)
{
    if (bare(k, n))
        weir__sb_put(b, k, n);
    else
        put_string(b, k, n);
}

/* v as a TOML value; false with err for what TOML cannot hold. */
static bool put_value(weir_strbuf *b, json_t *v, int depth, char *err, size_t err_len)
{
    if (depth > DEPTH_MAX) {
        snprintf(err, err_len, "values nest deeper than %d", DEPTH_MAX);
        return false;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        put_string(b, json_string_value(v), json_string_length(v));
        return true;
    case JSON_INTEGER:
        weir__sb_printf(b, "%" PRId64, (int64_t)json_integer_value(v));
        return true;
    case JSON_REAL: {
        double d = json_real_value(v);
        if (!isfinite(d)) {
            snprintf(err, err_len, "a number that is not finite");
            return false;
        }
        char num[40];
        snprintf(num, sizeof(num), "%.17g", d);
        weir__sb_puts(b, num);
        if (!strpbrk(num, ".eE"))
            weir__sb_puts(b, ".0");
        return true;
    }
    case JSON_TRUE:
    case JSON_FALSE:
        weir__sb_puts(b, json_is_true(v) ? "true" : "false");
        return true;
    case JSON_ARRAY: {
        weir__sb_put(b, "[", 1);
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            if (i)
                weir__sb_put(b, ", ", 2);
            if (!put_value(b, x, depth + 1, err, err_len))
                return false;
        }
        weir__sb_put(b, "]", 1);
        return true;
    }
    case JSON_OBJECT: {
        weir__sb_put(b, "{", 1);
        const char *k;
        size_t kn;
        json_t *x;
        bool first = true;
        void *tmp;
        json_object_keylen_foreach_safe(v, tmp, k, kn, x)
        {
            weir__sb_puts(b, first ? " " : ", ");
            first = false;
            put_key(b, k, kn);
            weir__sb_put(b, " = ", 3);
            if (!put_value(b, x, depth + 1, err, err_len))
                return false;
        }
        weir__sb_puts(b, first ? "}" : " }");
        return true;
    }
    default:
        snprintf(err, err_len, "null is no value: leave the key out");
        return false;
    }
}

/* The body lines `key = value` of the values object (in its order). */
static char *render(json_t *values, char *err, size_t err_len)
{
    weir_strbuf b = {0};
    const char *k;
    size_t kn;
    json_t *x;
    void *tmp;
    weir__sb_puts(&b, "");
    json_object_keylen_foreach_safe(values, tmp, k, kn, x)
    {
        if (strlen(k) != kn) {
            snprintf(err, err_len, "a key with a NUL");
            free(b.p);
            return NULL;
        }
        put_key(&b, k, kn);
        weir__sb_put(&b, " = ", 3);
        char why[200];
        if (!put_value(&b, x, 0, why, sizeof(why))) {
            snprintf(err, err_len, "'%.100s': %s", k, why);
            free(b.p);
            return NULL;
        }
        weir__sb_put(&b, "\n", 1);
    }
    if (b.oom) {
        snprintf(err, err_len, "out of memory");
        free(b.p);
        return NULL;
    }
    return b.p;
}

static void header(weir_strbuf *b, const char *kind, const char *name)
{
    weir__sb_printf(b, "[%s", kind);
    if (name) {
        weir__sb_put(b, ".", 1);
        put_key(b, name, strlen(name));
    }
    weir__sb_puts(b, "]\n");
}

/* The values of the body text of a section (its lines without header). */
static json_t *values_of(const char *kind, const char *name, const char *body, size_t len,
                         char *err, size_t err_len)
{
    weir_strbuf b = {0};
    header(&b, kind, name);
    weir__sb_put(&b, body, len);
    weir_toml_error te;
    weir_toml_value *root = b.oom ? NULL : weir_toml_parse(b.p, b.len, &te);
    json_t *out = NULL;
    if (!root) {
        if (b.oom)
            snprintf(err, err_len, "out of memory");
        else
            weir_toml_error_format(&te, "the section", err, err_len);
    } else {
        const weir_toml_value *t = weir_toml_table_get(root, kind);
        if (t && name)
            t = weir_toml_table_get(t, name);
        out = t ? to_json(t) : json_object();
    }
    weir_toml_free(root);
    free(b.p);
    return out;
}

/* ---- with a file ---- */

/* The file's section: status, and *body its lines (without the header),
 * *text the whole file. */
static int file_section(const char *path, const char *kind, const char *name, char **text,
                        size_t *len, size_t *start, size_t *end, json_t **out)
{
    char err[600];
    *text = weir__admin_read_config(path, len, out);
    if (!*text)
        return 500;
    int rc = weir__admin_section_span(*text, *len, kind, name, start, end, err, sizeof(err));
    if (rc < 0) {
        *out = err_json(err);
        return 409;
    }
    return rc ? 200 : 404;
}

int weir__admin_section_get(const char *path, weir_etcd_source *etcd, const char *kind,
                            const char *name, json_t **out)
{
    char err[600];
    if (etcd) {
        int64_t mod = 0;
        bool local = false;
        char *v = NULL;
        if (etcd_value(etcd, kind, name, &v, &mod, &local, out) < 0)
            return 503;
        if (!v) {
            *out = err_json("no such section in etcd");
            return 404;
        }
        json_t *vals = values_of(kind, name, v, strlen(v), err, sizeof(err));
        *out = vals ? json_pack("{s:s, s:s?, s:o, s:s, s:I, s:b}", "kind", kind, "name", name,
                                "values", vals, "text", v, "mod_revision", (json_int_t)mod, "local",
                                (int)local)
                    : err_json(err);
        free(v);
        return vals ? 200 : 500;
    }
    char *text;
    size_t len, start, end;
    int st = file_section(path, kind, name, &text, &len, &start, &end, out);
    if (st == 404)
        *out = err_json("no such section in the file");
    if (st != 200) {
        free(text);
        return st;
    }
    const char *nl = memchr(text + start, '\n', end - start);
    const char *body = nl ? nl + 1 : text + end;
    size_t body_len = (size_t)(text + end - body);
    json_t *vals = values_of(kind, name, body, body_len, err, sizeof(err));
    *out = vals ? json_pack("{s:s, s:s?, s:o, s:s%}", "kind", kind, "name", name, "values", vals,
                            "text", text + start, (size_t)(end - start))
                : err_json(err);
    free(text);
    return vals ? 200 : 500;
}

/* What a change would do, not done: the diff against the running
 * snapshot, with the text before and after. */
static int dry_run(weir_app *app, const char *text, size_t len, const char *old, size_t old_len,
                   json_t **out)
{
    weir_config *cfg = weir__app_config(app);
    if (!cfg) {
        *out = err_json("the server is stopping");
        return 503;
    }
    int st = weir__admin_diff(cfg, text, len, out);
    weir__config_unref(cfg);
    if (*out) {
        json_object_set_new(*out, "text", json_stringn(text, len));
        json_object_set_new(*out, "old_text", json_stringn(old, old_len));
        char sha[65];
        weir__admin_sha256_hex(old, old_len, sha);
        json_object_set_new(*out, "base", json_string(sha));
    }
    return st;
}

/* body NULL: delete. */
static int file_change(weir_app *app, weir_server *srv, const char *path, const char *kind,
                       const char *name, const char *body, const char *base, bool dry, json_t **out)
{
    char *text;
    size_t len, start, end;
    int st = file_section(path, kind, name, &text, &len, &start, &end, out);
    if (st != 200 && st != 404) {
        free(text);
        return st;
    }
    if (st == 404 && !body) {
        free(text);
        *out = err_json("no such section in the file");
        return 404;
    }
    weir_strbuf b = {0};
    weir__sb_put(&b, text, start);
    if (st == 404 && start > 0 && text[start - 1] != '\n')
        weir__sb_put(&b, "\n", 1); /* the last line had no newline */
    if (body) {
        if (st == 404 && start > 0)
            weir__sb_put(&b, "\n", 1);
        header(&b, kind, name);
        weir__sb_puts(&b, body);
    }
    weir__sb_put(&b, text + end, len - end);
    if (b.oom) {
        free(text);
        free(b.p);
        *out = err_json("out of memory");
        return 500;
    }
    char sha[65];
    weir__admin_sha256_hex(text, len, sha);
    if (dry && base && strcmp(base, sha) != 0) {
        *out = json_pack("{s:s, s:s}", "error",
                         "the file changed since it was read (its sha256 is not 'base')", "sha256",
                         sha);
        free(text);
        free(b.p);
        return 409;
    }
    if (dry) {
        st = dry_run(app, b.p ? b.p : "", b.len, text, len, out);
        free(text);
        free(b.p);
        return st;
    }
    free(text);
    st = weir__admin_apply(app, srv, path, b.p ? b.p : "", b.len, base,
                           body ? "section" : "section_delete", 0, out);
    free(b.p);
    return st;
}

/* ---- with etcd ---- */

int weir__admin_etcd_refusal(int rc, const char *err, const char *lost, json_t **out)
{
    if (rc == WEIR_ETCD_FAILED) {
        *out = err_json(lost);
        return 409;
    }
    if (rc != 0) {
        char msg[800];
        snprintf(msg, sizeof(msg), "etcd cannot be written (%s); nothing was changed", err);
        *out = err_json(msg);
        return 503;
    }
    return 200;
}

static int etcd_change(weir_app *app, weir_etcd_source *etcd, const char *kind, const char *name,
                       const char *body, bool has_base, int64_t base, bool dry, json_t **out)
{
    int64_t mod = 0;
    bool local = false;
    char *old = NULL;
    if (etcd_value(etcd, kind, name, &old, &mod, &local, out) < 0)
        return 503;
    bool exists = old != NULL;
    int st = 200;
    weir_cfg_errors errs = {0};
    if (local) {
        *out = err_json("that section is in this instance's --local file, not in etcd: change "
                        "it there");
        st = 409;
    } else if (!exists && !body) {
        *out = err_json("no such section in etcd");
        st = 404;
    } else if (has_base && base != mod) {
        *out = json_pack("{s:s, s:I}", "error",
                         "the section changed in etcd since it was read (its mod_revision is "
                         "not 'base'): read it again; nothing was written",
                         "mod_revision", (json_int_t)mod);
        st = 409;
    } else if (weir__etcd_source_check(etcd, kind, name, body, body ? strlen(body) : 0, &errs) !=
               0) {
        *out =
            dry ? json_pack("{s:b, s:o, s:s, s:s, s:I}", "valid", 0, "errors",
                            weir__admin_errors_json(&errs), "text", body ? body : "", "old_text",
                            old ? old : "", "base", (json_int_t)mod)
                : json_pack("{s:s, s:o}", "error", "the change would not load; nothing was written",
                            "errors", weir__admin_errors_json(&errs));
        st = dry ? 200 : 400;
    } else if (dry) {
        char key[400];
        snprintf(key, sizeof(key), "%s%s%s", kind, name ? "." : "", name ? name : "");
        *out = json_pack("{s:b, s:[], s:[], s:[], s:s, s:s, s:I}", "valid", 1, "added", "changed",
                         "removed", "text", body ? body : "", "old_text", old ? old : "", "base",
                         (json_int_t)mod);
        if (*out)
            json_array_append_new(json_object_get(*out, !exists ? "added"
                                                        : body  ? "changed"
                                                                : "removed"),
                                  json_string(key));
    } else {
        char err[600];
        int64_t rev = 0;
        weir_config *cfg = weir__app_config(app);
        if (cfg) /* what ran can be rolled back to */
            weir__admin_etcd_history_before(etcd, cfg);
        int rc = body ? weir__etcd_source_put(etcd, kind, name, body, strlen(body), mod, &rev, err,
                                              sizeof(err))
                      : weir__etcd_source_delete(etcd, kind, name, mod, &rev, err, sizeof(err));
        st = weir__admin_etcd_refusal(rc, err,
                                      "the section changed in etcd since this instance read it "
                                      "(another write came first): nothing was written; read it "
                                      "again and retry",
                                      out);
        if (st == 200) {
            *out = json_pack("{s:s, s:I, s:I}", "written", "etcd", "revision", (json_int_t)rev,
                             "previous_mod_revision", (json_int_t)mod);
            if (cfg && cfg->admin.history) {
                weir__admin_etcd_history_after(etcd, cfg, rev, "section", 0);
                json_object_set_new(*out, "history_id", json_integer(rev));
            }
        }
        weir__config_unref(cfg);
    }
    weir__cfg_errors_free(&errs);
    free(old);
    return st;
}

int weir__admin_section_change(weir_app *app, weir_server *srv, const char *path,
                               weir_etcd_source *etcd, const char *kind, const char *name,
                               json_t *values, json_t *base, bool dry, json_t **out)
{
    char err[600];
    char *body = NULL;
    if (name && !weir__etcd_name_ok(name, strlen(name))) {
        *out = err_json("a section's name has no '/', quote, backslash or control character and "
                        "at most 200 bytes");
        return 400;
    }
    if (values && !(body = render(values, err, sizeof(err)))) {
        *out = err_json(err);
        return 400;
    }
    int st;
    if (etcd) {
        if (base && !json_is_integer(base)) {
            *out = err_json("'base' is the section's mod_revision (an integer) with etcd");
            st = 400;
        } else {
            st = etcd_change(app, etcd, kind, name, body, base != NULL,
                             base ? (int64_t)json_integer_value(base) : 0, dry, out);
        }
    } else if (base && !(json_is_string(base) && json_string_length(base) == 64 &&
                         strspn(json_string_value(base), "0123456789abcdef") == 64)) {
        *out = err_json("'base' is the file's sha256 (64 hex digits, lower case)");
        st = 400;
    } else {
        st = file_change(app, srv, path, kind, name, body, base ? json_string_value(base) : NULL,
                         dry, out);
    }
    free(body);
    return st;
}

/* ---- the list ---- */

int weir__admin_section_list(weir_app *app, weir_etcd_source *etcd, json_t **out)
{
    weir_config *cfg = weir__app_config(app);
    json_t *arr = json_array();
    for (size_t i = 0; cfg && arr && i < cfg->n_section_hashes; i++) {
        const char *key = cfg->section_hashes[i].key, *dot = strchr(key, '.');
        json_array_append_new(
            arr, dot ? json_pack("{s:s%, s:s}", "kind", key, (size_t)(dot - key), "name", dot + 1)
                     : json_pack("{s:s, s:n}", "kind", key, "name"));
    }
    weir__config_unref(cfg);
    *out = json_pack("{s:o, s:s}", "sections", arr, "source", etcd ? "etcd" : "file");
    return 200;
}
