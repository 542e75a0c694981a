/*
 * etcd_history.c - the history of a configuration in etcd, shared by the
 * fleet: /PREFIX/history/ID, ID the etcd revision of the state (twenty
 * digits, so that keys sort by it), each {"id", "time", "action",
 * "instance", "sha256", "size", "text"[, "rollback_of"]} with the state's
 * configuration keys as one TOML text. Recorded by the instance that
 * writes a section through the API (the state before, when it is not the
 * newest entry, and the state after), and by a rollback, which makes the
 * keys what an entry says in one compare-and-swap transaction: every
 * instance then applies it from the watch. Main thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/admin/admin.h"
#include "app/etcd/etcd.h"
#include "app/etcd/source.h"
#include "weir/log.h"

static void key_of(weir_etcd_source *src, int64_t id, char *out, size_t n)
{
    snprintf(out, n, "%shistory/%020" PRId64, weir__etcd_source_dir(src), id);
}

static json_t *error(const char *msg)
{
    return json_pack("{s:o}", "error", weir__admin_text_json(msg, strlen(msg)));
}

/* The entries, oldest first (a new reference), or NULL with err. */
static json_t *entries(weir_etcd_source *src, char *err, size_t err_len)
{
    char dir[600];
    snprintf(dir, sizeof(dir), "%shistory/", weir__etcd_source_dir(src));
    weir_etcd_kvs k = {0};
    if (weir__etcd_range(weir__etcd_source_main(src), dir, 0, &k, err, err_len) != 0)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < k.n; i++) {
        json_t *e = json_loadb(k.v[i].value, k.v[i].value_len, JSON_REJECT_DUPLICATES, NULL);
        if (json_is_object(e) && json_is_string(json_object_get(e, "text")))
            json_array_append_new(a, e);
        else
            json_decref(e); /* not one of ours */
    }
    weir__etcd_kvs_free(&k);
    return a;
}

/* Records text (the keys at revision id) unless the newest entry is it;
 * trims to keep. Errors go to the log: the change itself took. */
static void record(weir_etcd_source *src, const weir_config *cfg, const char *text, size_t len,
                   int64_t id, const char *action, int64_t rollback_of)
{
    if (!cfg->admin.history)
        return;
    char err[600], sha[65], key[700];
    weir__admin_sha256_hex(text, len, sha);
    json_t *all = entries(src, err, sizeof(err));
    if (!all) {
        weir_log(WEIR_LEVEL_ERROR, "admin: the history in etcd cannot be read: %s", err);
        return;
    }
    size_t n = json_array_size(all);
    json_t *last = n ? json_array_get(all, n - 1) : NULL;
    const char *last_sha = json_string_value(json_object_get(last, "sha256"));
    if (!rollback_of && last_sha && strcmp(last_sha, sha) == 0) {
        json_decref(all);
        return;
    }
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    json_t *e = json_pack("{s:I, s:I, s:s, s:s, s:s, s:I, s:s%}", "id", (json_int_t)id, "time",
                          (json_int_t)time(NULL), "action", action, "instance", host, "sha256", sha,
                          "size", (json_int_t)len, "text", text, len);
    if (e && rollback_of)
        json_object_set_new(e, "rollback_of", json_integer(rollback_of));
    char *v = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    key_of(src, id, key, sizeof(key));
    weir_etcd *c = weir__etcd_source_main(src);
    if (!v || weir__etcd_put_if(c, key, v, strlen(v), -1, 0, NULL, err, sizeof(err)) != 0)
        weir_log(WEIR_LEVEL_ERROR, "admin: cannot record %s in etcd: %s", key,
                 v ? err : "out of memory");
    free(v);
    /* The oldest go past the bound (this one counted). */
    for (size_t i = 0; i + cfg->admin.history < n + 1 && i < n; i++) {
        json_int_t old = json_integer_value(json_object_get(json_array_get(all, i), "id"));
        if (old == id)
            continue;
        key_of(src, old, key, sizeof(key));
        weir__etcd_delete_if(c, key, false, -1, err, sizeof(err));
    }
    json_decref(all);
}

void weir__admin_etcd_history_before(weir_etcd_source *src, const weir_config *cfg)
{
    size_t len;
    int64_t last;
    char *text = weir__etcd_source_text(src, NULL, &len, &last);
    if (text)
        record(src, cfg, text, len, last, "etcd", 0);
    free(text);
}

void weir__admin_etcd_history_after(weir_etcd_source *src, const weir_config *cfg, int64_t rev,
                                    const char *action, int64_t rollback_of)
{
    char dir[600], err[600];
    snprintf(dir, sizeof(dir), "%s", weir__etcd_source_dir(src));
    weir_etcd_kvs k = {0};
    if (weir__etcd_range(weir__etcd_source_main(src), dir, rev, &k, err, sizeof(err)) != 0) {
        weir_log(WEIR_LEVEL_ERROR,
                 "admin: the configuration at revision %" PRId64
                 " cannot be read for the history: %s",
                 rev, err);
        return;
    }
    size_t len;
    int64_t last;
    char *text = weir__etcd_source_text(src, &k, &len, &last);
    if (text)
        record(src, cfg, text, len, rev, action, rollback_of);
    free(text);
    weir__etcd_kvs_free(&k);
}

int weir__admin_etcd_history_list(weir_etcd_source *src, const weir_config *cfg, json_t **out)
{
    char err[600];
    json_t *all = entries(src, err, sizeof(err));
    if (!all) {
        char msg[800];
        snprintf(msg, sizeof(msg), "etcd cannot be read (%s)", err);
        *out = error(msg);
        return 503;
    }
    json_t *list = json_array();
    for (size_t i = json_array_size(all); list && i-- > 0;) {
        json_t *e = json_copy(json_array_get(all, i));
        json_object_del(e, "text");
        json_array_append_new(list, e);
    }
    json_decref(all);
    char where[700];
    snprintf(where, sizeof(where), "etcd:%shistory/", weir__etcd_source_dir(src));
    *out = json_pack("{s:o, s:s, s:I}", "entries", list, "dir", where, "keep",
                     (json_int_t)cfg->admin.history);
    return 200;
}

/* Entry id (a new reference), or NULL with the answer set. */
static json_t *entry(weir_etcd_source *src, int64_t id, json_t **out, int *status)
{
    char key[700], err[600];
    key_of(src, id, key, sizeof(key));
    weir_etcd_kvs k = {0};
    if (weir__etcd_get(weir__etcd_source_main(src), key, &k, err, sizeof(err)) != 0) {
        *out = error(err);
        *status = 503;
        return NULL;
    }
    json_t *e =
        k.n ? json_loadb(k.v[0].value, k.v[0].value_len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    weir__etcd_kvs_free(&k);
    json_t *t = json_object_get(e, "text");
    char sha[65] = "";
    if (json_is_string(t))
        weir__admin_sha256_hex(json_string_value(t), json_string_length(t), sha);
    const char *want = json_string_value(json_object_get(e, "sha256"));
    if (!want || strcmp(want, sha) != 0) {
        json_decref(e);
        *out = error("no such history entry (or it is damaged)");
        *status = 404;
        return NULL;
    }
    return e;
}

int weir__admin_etcd_history_get(weir_etcd_source *src, int64_t id, json_t **out)
{
    int st = 200;
    json_t *e = entry(src, id, out, &st);
    if (e)
        *out = e;
    return st;
}

int weir__admin_etcd_rollback(weir_etcd_source *src, const weir_config *cfg, int64_t id,
                              json_t **out)
{
    int st = 200;
    json_t *e = entry(src, id, out, &st);
    if (!e)
        return st;
    json_t *t = json_object_get(e, "text");
    const char *text = json_string_value(t);
    size_t len = json_string_length(t);
    weir_cfg_errors errs = {0};
    char err[600];
    int64_t rev = 0;
    /* The entry must load with this instance's --local file, as any change
     * in etcd must. */
    if (weir__etcd_source_check_text(src, text, len, &errs) != 0) {
        *out = json_pack("{s:s, s:o}", "error",
                         "that configuration would not load now; nothing was written", "errors",
                         weir__admin_errors_json(&errs));
        st = 400;
    } else {
        weir__admin_etcd_history_before(src, cfg);
        int rc = weir__etcd_source_replace(src, text, len, &rev, err, sizeof(err));
        st = weir__admin_etcd_refusal(rc, err,
                                      "the configuration changed in etcd since this instance "
                                      "read it: nothing was written; try again",
                                      out);
        if (st == 200) {
            weir__admin_etcd_history_after(src, cfg, rev, "rollback", id);
            *out = json_pack("{s:b, s:s, s:I, s:I}", "applied", 1, "written", "etcd", "revision",
                             (json_int_t)rev, "history_id", (json_int_t)rev);
        }
    }
    weir__cfg_errors_free(&errs);
    json_decref(e);
    return st;
}
