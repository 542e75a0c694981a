/*
 * config_api.c - the configuration file through the admin API: read it,
 * apply a new text (checked, written atomically, reloaded; the old file
 * back if the reload fails), compare a text with the running snapshot,
 * and the history of applied texts with rollback (docs/admin-api.md).
 *
 * Everything here runs on the server's main thread, one call at a time,
 * like reloads.
 *
 * The history is a directory ([admin] history_dir, else FILE.history):
 * ID.toml, the text, and ID.json, what it was ({"id", "time", "sha256",
 * "action", "size"[, "rollback_of"]}); IDs grow by one, and the oldest go
 * past [admin] history entries.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/admin/admin.h"
#include "app/admin/toml_edit.h"
#include "app/strbuf.h"
#include "weir/log.h"

#define TEXT_MAX (1024 * 1024)

char *weir__admin_read_config(const char *path, size_t *len, json_t **why)
{
    char err[600];
    char *text = weir__admin_read_file(path, len, err, sizeof(err));
    if (text && *len > TEXT_MAX) {
        free(text);
        text = NULL;
        snprintf(err, sizeof(err), "%s is larger than 1 MiB, the API's limit: edit it on disk",
                 path);
    }
    if (!text && why)
        *why = json_pack("{s:o}", "error", weir__admin_text_json(err, strlen(err)));
    return text;
}

void weir__admin_sha256_hex(const char *text, size_t len, char out[65])
{
    unsigned char md[32];
    size_t n = 0;
    if (!EVP_Q_digest(NULL, "SHA256", NULL, text, len, md, &n) || n != 32) {
        out[0] = '\0';
        return;
    }
    for (size_t i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- JSON text ---- */

json_t *weir__admin_text_json(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j || !s)
        return j;
    weir_strbuf b = {0};
    weir__sb_put_utf8(&b, s, n);
    j = b.oom ? NULL : json_stringn(b.p ? b.p : "", b.len);
    free(b.p);
    return j;
}

json_t *weir__admin_errors_json(const weir_cfg_errors *errs)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < errs->n; i++)
        json_array_append_new(a, weir__admin_text_json(errs->v[i], strlen(errs->v[i])));
    return a;
}

/* ---- the history ---- */

static void history_dir(const weir_config *cfg, const char *path, char *out, size_t out_len)
{
    if (cfg->admin.history_dir)
        snprintf(out, out_len, "%s", cfg->admin.history_dir);
    else
        snprintf(out, out_len, "%s.history", path);
}

/* The IDs in dir, ascending (malloc'd; *n of them). */
static long *history_ids(const char *dir, size_t *n)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    long *ids = NULL;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        /* ID.json: digits, no sign or leading zero, far from overflow. */
        const char *nm = e->d_name;
        size_t digits = strspn(nm, "0123456789");
        if (digits == 0 || digits > 15 || nm[0] == '0' || strcmp(nm + digits, ".json") != 0)
            continue;
        long id = strtol(nm, NULL, 10);
        if (*n == cap) {
            cap = cap ? cap * 2 : 32;
            long *nv = realloc(ids, cap * sizeof(*nv));
            if (!nv)
                break;
            ids = nv;
        }
        ids[(*n)++] = id;
    }
    closedir(d);
    for (size_t i = 1; i < *n; i++) /* insertion sort: a directory of at most ~1000 */
        for (size_t k = i; k > 0 && ids[k - 1] > ids[k]; k--) {
            long t = ids[k];
            ids[k] = ids[k - 1];
            ids[k - 1] = t;
        }
    return ids;
}

static json_t *entry_meta(const char *dir, long id)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/%ld.json", dir, id);
    return json_load_file(p, JSON_REJECT_DUPLICATES, NULL);
}

/* The history directory is weir's own: a directory (not a link to one),
 * of this user, that no one else may write (its files are rewritten and
 * deleted by name). Made (0700) when missing. */
static bool dir_ok(const char *dir, char *err, size_t err_len)
{
    struct stat st;
    if (lstat(dir, &st) < 0 && errno == ENOENT && mkdir(dir, 0700) == 0)
        return true;
    if (lstat(dir, &st) < 0) {
        snprintf(err, err_len, "history %.400s: %s", dir, strerror(errno));
        return false;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022)) {
        snprintf(err, err_len,
                 "history %.400s is not a directory of weir's user that only it may write; nothing "
                 "recorded",
                 dir);
        return false;
    }
    return true;
}

/* Records text as the newest entry, unless it is the newest already;
 * returns its ID (0: history off; -1: not recorded, err says why, and
 * the log). */
static long history_add(const weir_config *cfg, const char *path, const char *text, size_t len,
                        const char *action, long rollback_of, char *err, size_t err_len)
{
    if (!cfg->admin.history)
        return 0;
    char dir[4096], sha[65];
    history_dir(cfg, path, dir, sizeof(dir));
    weir__admin_sha256_hex(text, len, sha);
    if (!dir_ok(dir, err, err_len)) {
        weir_log(WEIR_LEVEL_ERROR, "admin: %s", err);
        return -1;
    }
    size_t n;
    long *ids = history_ids(dir, &n);
    long id = n ? ids[n - 1] + 1 : 1;
    json_t *last = n ? entry_meta(dir, ids[n - 1]) : NULL;
    const char *last_sha = json_string_value(json_object_get(last, "sha256"));
    bool same = last_sha && strcmp(last_sha, sha) == 0 && !rollback_of;
    json_decref(last);
    if (same) {
        free(ids);
        return id - 1;
    }
    char p[4200];
    snprintf(p, sizeof(p), "%s/%ld.toml", dir, id);
    json_t *meta =
        json_pack("{s:I, s:I, s:s, s:s, s:I}", "id", (json_int_t)id, "time", (json_int_t)time(NULL),
                  "sha256", sha, "action", action, "size", (json_int_t)len);
    if (meta && rollback_of)
        json_object_set_new(meta, "rollback_of", json_integer(rollback_of));
    char *m = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    bool ok = m && weir__admin_write_file(p, text, len, 0600) == 0;
    if (ok) { /* the .json last: an entry is listed once it is whole */
        snprintf(p, sizeof(p), "%s/%ld.json", dir, id);
        ok = weir__admin_write_file(p, m, strlen(m), 0600) == 0;
    }
    free(m);
    if (!ok) {
        snprintf(err, err_len, "cannot record history entry %.400s: %s", p, strerror(errno));
        weir_log(WEIR_LEVEL_ERROR, "admin: %s", err);
        free(ids);
        return -1;
    }
    /* Keep the newest cfg->admin.history (this one among them). */
    for (size_t i = 0; i + cfg->admin.history < n + 1 && i < n; i++) {
        snprintf(p, sizeof(p), "%s/%ld.json", dir, ids[i]);
        unlink(p);
        snprintf(p, sizeof(p), "%s/%ld.toml", dir, ids[i]);
        unlink(p);
    }
    free(ids);
    return id;
}

void weir__admin_history_note(const weir_config *cfg, const char *path, const char *action)
{
    size_t len;
    char *text = path ? weir__admin_read_config(path, &len, NULL) : NULL;
    char err[600];
    if (text)
        history_add(cfg, path, text, len, action, 0, err, sizeof(err));
    free(text);
}

/* Entry id's meta with its "text"; NULL when there is none. */
static json_t *history_entry(const weir_config *cfg, const char *path, long id)
{
    char dir[4096], p[4200];
    history_dir(cfg, path, dir, sizeof(dir));
    json_t *m = entry_meta(dir, id);
    if (!json_is_object(m) || json_integer_value(json_object_get(m, "id")) != id) {
        json_decref(m);
        return NULL;
    }
    snprintf(p, sizeof(p), "%s/%ld.toml", dir, id);
    size_t len;
    char *text = weir__admin_read_config(p, &len, NULL);
    char sha[65] = "";
    if (text)
        weir__admin_sha256_hex(text, len, sha);
    const char *want = json_string_value(json_object_get(m, "sha256"));
    if (!text || !want || strcmp(want, sha) != 0) { /* damaged: not offered */
        free(text);
        json_decref(m);
        return NULL;
    }
    json_t *t = json_stringn(text, len); /* NULL: not UTF-8, as no loadable file is */
    free(text);
    if (!t) {
        json_decref(m);
        return NULL;
    }
    json_object_set_new(m, "text", t);
    return m;
}

int weir__admin_history_list(const weir_config *cfg, const char *path, json_t **out)
{
    char dir[4096];
    history_dir(cfg, path, dir, sizeof(dir));
    size_t n;
    long *ids = history_ids(dir, &n);
    json_t *arr = json_array();
    for (size_t i = n; arr && i-- > 0;) {
        /* Listed as it is checked to be used: its text has its sha256. */
        json_t *m = history_entry(cfg, path, ids[i]);
        if (m) {
            json_object_del(m, "text");
        } else {
            m = json_pack("{s:I, s:b}", "id", (json_int_t)ids[i], "damaged", 1);
        }
        json_array_append_new(arr, m);
    }
    free(ids);
    *out = json_pack("{s:o, s:s, s:I}", "entries", arr, "dir", dir, "keep",
                     (json_int_t)cfg->admin.history);
    return 200;
}

int weir__admin_history_get(const weir_config *cfg, const char *path, long id, json_t **out)
{
    json_t *m = history_entry(cfg, path, id);
    *out = m ? m : json_pack("{s:s}", "error", "no such history entry (or it is damaged)");
    return m ? 200 : 404;
}

/* ---- apply ---- */

int weir__admin_apply(weir_app *app, weir_server *srv, const char *path, const char *text,
                      size_t len, const char *base, const char *action, long rollback_of,
                      json_t **out)
{
    *out = NULL;
    size_t old_len = 0, prev_len = 0;
    char *prev = NULL;
    char *old = weir__admin_read_config(path, &old_len, out);
    if (!old)
        return 500;
    char sha[65], new_sha[65];
    weir__admin_sha256_hex(old, old_len, sha);
    weir__admin_sha256_hex(text, len, new_sha);
    int status = 200;
    weir_cfg_errors errs = {0};
    weir_config *cur = weir__app_config(app);
    if (base && strcmp(base, sha) != 0) {
        *out = json_pack("{s:s, s:s}", "error",
                         "the file changed since it was read (its sha256 is not 'base'): read it "
                         "again; nothing changed",
                         "sha256", sha);
        status = 409;
        goto done;
    }
    if (!cur) {
        *out = json_pack("{s:s}", "error", "the server is stopping");
        status = 503;
        goto done;
    }
    /* Checked first (named as the file, as weir -t would), so that a text
     * that cannot load never reaches the disk. */
    weir_config *c = weir__config_load(text, len, path, &errs);
    weir__config_unref(c);
    if (!c) {
        *out = json_pack("{s:s, s:o}", "error", "the configuration would not load; nothing changed",
                         "errors", weir__admin_errors_json(&errs));
        status = errs.n ? 400 : 500;
        goto done;
    }
    /* The file as it is (edited by hand since?) can be rolled back to. */
    char herr[600] = "";
    history_add(cur, path, old, old_len, "file", 0, herr, sizeof(herr));
    char err[600], prev_path[4200];
    char real[PATH_MAX]; /* FILE.prev is next to the file a link names */
    snprintf(prev_path, sizeof(prev_path), "%s.prev", realpath(path, real) ? real : path);
    prev = weir__admin_read_config(prev_path, &prev_len, NULL);
    if (weir__admin_replace_file(path, text, len, old, old_len, err, sizeof(err)) != 0) {
        *out = json_pack("{s:s}", "error", err);
        status = 500;
        goto done;
    }
    if (weir__app_reload_errs(app, path, srv, &errs) != WEIR_OK) {
        /* The file must say what runs: the old text goes back, and so does
         * the FILE.prev the write replaced. */
        bool back = weir__admin_replace_file(path, old, old_len, prev ? prev : old,
                                             prev ? prev_len : old_len, err, sizeof(err)) == 0;
        *out = json_pack("{s:s, s:o}", "error",
                         back ? "reload failed: the file is restored and the running "
                                "configuration stays"
                              : "reload failed and the old file could not be put back: the "
                                "running configuration stays",
                         "errors", weir__admin_errors_json(&errs));
        status = 409;
        goto done;
    }
    weir_config *now = weir__app_config(app);
    long id =
        history_add(now ? now : cur, path, text, len, action, rollback_of, herr, sizeof(herr));
    weir__config_unref(now);
    *out = json_pack("{s:b, s:s, s:s}", "applied", 1, "file", path, "sha256", new_sha);
    if (id > 0)
        json_object_set_new(*out, "history_id", json_integer(id));
    if (herr[0]) /* applied all the same */
        json_object_set_new(*out, "history_error", weir__admin_text_json(herr, strlen(herr)));
done:
    weir__config_unref(cur);
    weir__cfg_errors_free(&errs);
    free(old);
    free(prev);
    return status;
}

int weir__admin_rollback(weir_app *app, weir_server *srv, const char *path, long id,
                         const char *base, json_t **out)
{
    weir_config *cur = weir__app_config(app);
    if (!cur) {
        *out = json_pack("{s:s}", "error", "the server is stopping");
        return 503;
    }
    json_t *m = history_entry(cur, path, id);
    weir__config_unref(cur);
    if (!m) {
        *out = json_pack("{s:s}", "error", "no such history entry (or it is damaged)");
        return 404;
    }
    json_t *t = json_object_get(m, "text");
    int st = weir__admin_apply(app, srv, path, json_string_value(t), json_string_length(t), base,
                               "rollback", id, out);
    json_decref(m);
    return st;
}

int weir__admin_file_get(const char *path, json_t **out)
{
    size_t len;
    char *text = weir__admin_read_config(path, &len, out);
    if (!text)
        return 500;
    char sha[65];
    weir__admin_sha256_hex(text, len, sha);
    json_t *t = json_stringn(text, len);
    free(text);
    if (!t) {
        *out = json_pack("{s:s}", "error",
                         "the configuration file is not UTF-8 text (weir would not load it)");
        return 422;
    }
    *out = json_pack("{s:s, s:o, s:s}", "file", path, "text", t, "sha256", sha);
    return 200;
}

/* ---- diff ---- */

static void add_change(void *arg, const char *change, const char *section)
{
    json_array_append_new(json_object_get(arg, change), json_string(section));
}

int weir__admin_diff(const weir_config *running, const char *text, size_t len, json_t **out)
{
    weir_cfg_errors errs = {0};
    weir_config *c = weir__config_load(text, len, running->file ? running->file : "request", &errs);
    if (!c) {
        *out = json_pack("{s:b, s:o}", "valid", 0, "errors", weir__admin_errors_json(&errs));
        weir__cfg_errors_free(&errs);
        return 200;
    }
    *out = json_pack("{s:b, s:[], s:[], s:[]}", "valid", 1, "added", "changed", "removed");
    if (*out && !weir__config_diff(running, c, add_change, *out))
        json_object_set_new(*out, "unknown", json_true()); /* a snapshot without hashes */
    weir__config_unref(c);
    return 200;
}

/* ---- status ---- */

json_t *weir__admin_status_json(weir_app *app, const char *path, const char *etcd_source)
{
    weir_app_reload_info r;
    weir__app_reload_info(app, &r);
    weir_config *cfg = weir__app_config(app);
    json_t *last =
        r.at ? json_pack("{s:I, s:b, s:o}", "time", (json_int_t)r.at, "ok", (int)r.ok, "error",
                         r.ok ? json_null() : weir__admin_text_json(r.error, strlen(r.error)))
             : json_null();
    json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:s, s:s, s:o}", "version", weir_version(), "pid",
                          (json_int_t)getpid(), "started", (json_int_t)r.started, "revision",
                          (json_int_t)(cfg ? cfg->revision : 0), "source",
                          etcd_source ? "etcd"
                          : path      ? "file"
                                      : "embedded",
                          "config",
                          etcd_source ? etcd_source
                          : path      ? path
                                      : "",
                          "last_reload", last);
    weir__config_unref(cfg);
    return o;
}
