/*
 * cli.c - `weir config push FILE etcd://.../PREFIX` and `weir config pull
 * etcd://.../PREFIX`: a configuration file into etcd, one key per section,
 * and back.
 *
 * push validates the file first (weir never stores what it would refuse)
 * and writes in one transaction: every section's key, and the deletion of
 * configuration keys the file no longer has; the instances watching see
 * one revision, so one reload. etcd's limit on operations per transaction
 * (--max-txn-ops, 128 by default) bounds one push; a larger file is
 * refused rather than written in parts.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/admin/toml_edit.h"
#include "app/etcd/cli.h"
#include "app/etcd/source.h"
#include "app/etcd/split.h"

#define MAX_TXN_OPS 128
#define MAX_DIR 300 /* a prefix (at most 256 bytes) and "/" */

static weir_etcd *open_url(const char *url, weir_etcd_url *u, FILE *err)
{
    char msg[600];
    if (weir__etcd_url_parse(url, u, msg, sizeof(msg)) != 0) {
        fprintf(err, "weir: %s\n", msg);
        return NULL;
    }
    const char *ca = getenv("WEIR_ETCD_CACERT"), *cert = getenv("WEIR_ETCD_CERT"),
               *key = getenv("WEIR_ETCD_KEY");
    weir_etcd *e = weir__etcd_connect(u, ca, cert, key, 5000, msg, sizeof(msg));
    if (!e)
        fprintf(err, "weir: %s\n", msg);
    return e;
}

int weir__config_pull(const char *url, FILE *out, FILE *err)
{
    weir_etcd_url u;
    weir_etcd *e = open_url(url, &u, err);
    if (!e)
        return 1;
    char dir[MAX_DIR], msg[600];
    snprintf(dir, sizeof(dir), "%s/", u.prefix);
    char *shown = weir__etcd_url_masked(url);
    weir_etcd_kvs k;
    int rc = 1;
    if (!shown || weir__etcd_range(e, dir, 0, &k, msg, sizeof(msg)) != 0) {
        fprintf(err, "weir: %s: %s\n", shown ? shown : "etcd", shown ? msg : "out of memory");
        goto out;
    }
    weir_cfg_errors errs = {0};
    size_t len;
    char *text = weir__etcd_assemble(&k, u.prefix, shown, NULL, NULL, 0, true, &len, NULL, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(err, "%s\n", errs.v[i]);
    weir__cfg_errors_free(&errs);
    weir__etcd_kvs_free(&k);
    if (text && fwrite(text, 1, len, out) == len)
        rc = 0;
    free(text);
out:
    free(shown);
    weir__etcd_free(e);
    weir__etcd_url_free(&u);
    return rc;
}

int weir__config_push(const char *file, const char *url, FILE *out, FILE *err)
{
    size_t len = 0;
    char rerr[600];
    char *text = weir__admin_read_file(file, &len, rerr, sizeof(rerr));
    if (!text) {
        fprintf(err, "weir: %s\n", rerr);
        return 1;
    }
    weir_cfg_errors errs = {0};
    weir_config *c = weir__config_load(text, len, file, &errs);
    if (!c) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(err, "%s\n", errs.v[i]);
        fprintf(err, "weir: %s is not valid: nothing pushed\n", file);
        weir__cfg_errors_free(&errs);
        free(text);
        return 1;
    }
    weir__config_unref(c);
    weir_cfg_section *v = NULL;
    size_t n = 0;
    int el;
    char msg[600];
    if (weir__cfg_split(text, len, false, &v, &n, &el, msg, sizeof(msg)) != 0) {
        fprintf(err, "%s:%d: %s: nothing pushed\n", file, el, msg);
        free(text);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i].name && !weir__etcd_name_ok(v[i].name, strlen(v[i].name))) {
            fprintf(err,
                    "%s:%d: [%s.\"%s\"]: a name in etcd has no '/', quote, backslash or control "
                    "character and at most 200 bytes: nothing pushed\n",
                    file, v[i].line, v[i].section, v[i].name);
            weir__cfg_sections_free(v, n);
            free(text);
            return 1;
        }
    }
    weir_etcd_url u;
    weir_etcd *e = open_url(url, &u, err);
    int rc = 1;
    weir_etcd_kvs old = {0};
    char *shown = NULL;
    json_t *ops = json_array();
    if (!e)
        goto out;
    char dir[MAX_DIR];
    snprintf(dir, sizeof(dir), "%s/", u.prefix);
    shown = weir__etcd_url_masked(url);
    if (!shown) {
        fprintf(err, "weir: out of memory\n");
        goto out;
    }
    if (weir__etcd_range(e, dir, 0, &old, msg, sizeof(msg)) != 0) {
        fprintf(err, "weir: %s: %s\n", shown, msg);
        goto out;
    }
    char **keys = calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; keys && i < n; i++) {
        int kn = v[i].name ? asprintf(&keys[i], "%s%s/%s", dir, v[i].section, v[i].name)
                           : asprintf(&keys[i], "%s%s", dir, v[i].section);
        if (kn < 0)
            keys[i] = NULL;
        json_array_append_new(
            ops, weir__etcd_op_put(keys[i] ? keys[i] : dir, v[i].body, v[i].body_len, 0));
    }
    /* Configuration keys the file no longer has. */
    size_t deleted = 0;
    for (size_t i = 0; keys && i < old.n; i++) {
        const char *rest = old.v[i].key + strlen(dir);
        if (weir__etcd_fleet_key(rest, strlen(rest)))
            continue;
        bool kept = false;
        for (size_t k = 0; k < n && !kept; k++)
            kept = keys[k] && strcmp(keys[k], old.v[i].key) == 0;
        if (!kept) {
            json_array_append_new(ops, weir__etcd_op_delete(old.v[i].key, false));
            deleted++;
        }
    }
    for (size_t i = 0; keys && i < n; i++)
        free(keys[i]);
    free(keys);
    if (json_array_size(ops) > MAX_TXN_OPS) {
        fprintf(err,
                "weir: %s has %zu sections and %zu keys to delete: over etcd's %d operations "
                "in one transaction; nothing pushed\n",
                file, n, deleted, MAX_TXN_OPS);
        goto out;
    }
    int64_t rev = 0;
    if (weir__etcd_txn(e, NULL, ops, &rev, msg, sizeof(msg)) != 0) {
        ops = NULL;
        fprintf(err, "weir: %s: %s: nothing pushed\n", shown, msg);
        goto out;
    }
    ops = NULL;
    fprintf(out, "weir: pushed %zu sections of %s to %s (%zu keys deleted), revision %" PRId64 "\n",
            n, file, shown, deleted, rev);
    rc = 0;
out:
    json_decref(ops);
    weir__etcd_kvs_free(&old);
    weir__cfg_sections_free(v, n);
    if (e) {
        weir__etcd_free(e);
        weir__etcd_url_free(&u);
    }
    free(shown);
    free(text);
    return rc;
}
