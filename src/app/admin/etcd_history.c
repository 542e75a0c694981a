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

/* At most this many entries in etcd: every instance reads them with its
 * configuration (they are under the prefix it watches). */
#define KEEP_MAX 100

/* Entry kv checked: its id from its key, and the entry when it is whole
 * (JSON of ours, its text the sha256 it says, its id the key's); else
 * NULL. */
static json_t *checked(weir_etcd_source *src, const weir_etcd_kv *kv, int64_t *id)
{
    size_t dl = strlen(weir__etcd_source_dir(src)) + strlen("history/");
    const char *digits = kv->key + dl;
    *id = 0;
    if (kv->key_len != dl + 20 || strspn(digits, "0123456789") != 20)
        return NULL;
    *id = strtoll(digits, NULL, 10);
    json_t *e = json_loadb(kv->value, kv->value_len, JSON_REJECT_DUPLICATES, NULL);
    json_t *t = json_object_get(e, "text");
    const char *sha = json_string_value(json_object_get(e, "sha256"));
    char want[65] = "";
    if (json_is_string(t))
        weir__admin_sha256_hex(json_string_value(t), json_string_length(t), want);
    if (!json_is_string(t) || !sha || strcmp(sha, want) != 0 ||
        json_integer_value(json_object_get(e, "id")) != *id) {
        json_decref(e);
        return NULL;
    }
    return e;
}

/* The entries' keys, oldest first, or -1 with err. */
static int range_history(weir_etcd_source *src, weir_etcd_kvs *k, char *err, size_t err_len)
{
    char dir[600];
    snprintf(dir, sizeof(dir), "%shistory/", weir__etcd_source_dir(src));
    return weir__etcd_range(weir__etcd_source_main(src), dir, 0, k, err, err_len);
}

static uint32_t keep_of(const weir_config *cfg)
{
    return cfg->admin.history < KEEP_MAX ? cfg->admin.history : KEEP_MAX;
}

/* Records text (the configuration at revision id) unless the newest
 * whole entry is it; the oldest go past the bound. Errors go to the log:
 * the change itself took. */
static void record(weir_etcd_source *src, const weir_config *cfg, const char *text, size_t len,
                   int64_t id, const char *action, int64_t rollback_of)
{
    if (!cfg->admin.history)
        return;
    char err[600] = "", sha[65], key[700];
    weir__admin_sha256_hex(text, len, sha);
    weir_etcd_kvs k = {0};
    if (range_history(src, &k, err, sizeof(err)) != 0) {
        weir_log(WEIR_LEVEL_ERROR, "admin: the history in etcd cannot be read: %s", err);
        return;
    }
    bool same = false;
    for (size_t i = k.n; i-- > 0 && !rollback_of;) {
        int64_t eid;
        json_t *e = checked(src, &k.v[i], &eid);
        if (!e)
            continue; /* damaged: the newest whole one decides */
        same = strcmp(json_string_value(json_object_get(e, "sha256")), sha) == 0;
        json_decref(e);
        break;
    }
    weir_etcd *c = weir__etcd_source_main(src);
    bool added = false;
    if (!same) {
        char host[256] = "";
        gethostname(host, sizeof(host) - 1);
        json_t *e = json_pack("{s:I, s:I, s:s, s:s, s:s, s:I, s:s%}", "id", (json_int_t)id, "time",
                              (json_int_t)time(NULL), "action", action, "instance", host, "sha256",
                              sha, "size", (json_int_t)len, "text", text, len);
        if (e && rollback_of)
            json_object_set_new(e, "rollback_of", json_integer(rollback_of));
        char *v = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        key_of(src, id, key, sizeof(key));
        /* Only where there is none: one state, one entry. */
        int rc = v ? weir__etcd_put_if(c, key, v, strlen(v), 0, 0, NULL, err, sizeof(err)) : -1;
        if (rc < 0)
            weir_log(WEIR_LEVEL_ERROR, "admin: cannot record %s in etcd: %s", key,
                     v ? err : "out of memory");
        free(v);
        added = rc == 0;
    }
    /* The oldest keys go past the bound (the new one, the newest, stays). */
    size_t total = k.n + (added ? 1 : 0);
    for (size_t i = 0; total > keep_of(cfg) && i < k.n; i++, total--)
        weir__etcd_delete_if(c, k.v[i].key, false, -1, err, sizeof(err));
    weir__etcd_kvs_free(&k);
}

/* The configuration in etcd now, recorded at the store revision it was
 * read at. */
void weir__admin_etcd_history_before(weir_etcd_source *src, const weir_config *cfg)
{
    weir__admin_etcd_history_after(src, cfg, 0, "etcd", 0);
}

void weir__admin_etcd_history_after(weir_etcd_source *src, const weir_config *cfg, int64_t rev,
                                    const char *action, int64_t rollback_of)
{
    if (!cfg->admin.history)
        return;
    char err[600] = "";
    weir_etcd_kvs k = {0};
    if (weir__etcd_range(weir__etcd_source_main(src), weir__etcd_source_dir(src), rev, &k, err,
                         sizeof(err)) != 0) {
        weir_log(WEIR_LEVEL_ERROR,
                 "admin: the configuration in etcd cannot be read for the "
                 "history: %s",
                 err);
        return;
    }
    size_t len;
    int64_t last;
    char *text = weir__etcd_source_text(src, &k, &len, &last);
    if (text)
        record(src, cfg, text, len, rev ? rev : k.revision, action, rollback_of);
    free(text);
    weir__etcd_kvs_free(&k);
}

int weir__admin_etcd_history_list(weir_etcd_source *src, const weir_config *cfg, json_t **out)
{
    char err[600] = "";
    weir_etcd_kvs k = {0};
    if (range_history(src, &k, err, sizeof(err)) != 0) {
        char msg[800];
        snprintf(msg, sizeof(msg), "etcd cannot be read (%s)", err);
        *out = error(msg);
        return 503;
    }
    static const char *const shown[] = {"id",     "time", "action",     "instance",
                                        "sha256", "size", "rollback_of"};
    json_t *list = json_array();
    for (size_t i = k.n; list && i-- > 0;) {
        int64_t id;
        json_t *e = checked(src, &k.v[i], &id), *x = json_object();
        for (size_t f = 0; e && x && f < sizeof(shown) / sizeof(shown[0]); f++) {
            json_t *v = json_object_get(e, shown[f]);
            if (json_is_string(v) || json_is_integer(v))
                json_object_set(x, shown[f], v);
        }
        if (!e && x) { /* listed, never offered */
            json_object_set_new(x, "id", json_integer(id));
            json_object_set_new(x, "damaged", json_true());
        }
        json_decref(e);
        json_array_append_new(list, x);
    }
    weir__etcd_kvs_free(&k);
    char where[700];
    snprintf(where, sizeof(where), "etcd:%shistory/", weir__etcd_source_dir(src));
    *out = json_pack("{s:o, s:s, s:I}", "entries", list, "dir", where, "keep",
                     (json_int_t)keep_of(cfg));
    return 200;
}

/* Entry id (a new reference), or NULL with the answer set. */
static json_t *entry(weir_etcd_source *src, int64_t id, json_t **out, int *status)
{
    char key[700], err[600] = "";
    key_of(src, id, key, sizeof(key));
    weir_etcd_kvs k = {0};
    if (weir__etcd_get(weir__etcd_source_main(src), key, &k, err, sizeof(err)) != 0) {
        *out = error(err);
        *status = 503;
        return NULL;
    }
    int64_t kid = 0;
    json_t *e = k.n ? checked(src, &k.v[0], &kid) : NULL;
    weir__etcd_kvs_free(&k);
    if (!e) {
        *out = error("no such history entry (or it is damaged)");
        *status = 404;
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
