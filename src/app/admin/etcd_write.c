/*
 * etcd_write.c - the admin API's membership writes when the config is
 * etcd's (admin.h): the upstream's key rewritten and written with a
 * compare-and-swap on the mod revision the running snapshot was built
 * from. The write is not applied here: like any change in etcd, it is
 * served once the watch brings it back, on every instance at once, and a
 * write that lost the race changes nothing (409), never a lost update.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/admin/admin.h"
#include "app/etcd/source.h"

static char *error_body(const char *fmt, const char *a, const char *b)
{
    char msg[1200];
    snprintf(msg, sizeof(msg), fmt, a, b ? b : "");
    json_t *j = json_pack("{s:s}", "error", msg);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

void weir__admin_etcd_write(weir_etcd_source *src, const char *name, const char *const *addrs,
                            size_t n_addrs, int *status, char **body)
{
    int64_t mod = 0;
    bool local = false;
    char *value = weir__etcd_source_value(src, "upstreams", name, &mod, &local);
    char *text = NULL, *out = NULL;
    size_t out_len = 0;
    if (!value) {
        *status = 409;
        *body = error_body("upstream '%s' is not in etcd (it is in this instance's --local "
                           "file): change it there%s",
                           name, NULL);
        return;
    }
    char err[600];
    /* The value under its header, as the file would have it. */
    if (asprintf(&text, "[upstreams.\"%s\"]\n%s", name, value) < 0) {
        text = NULL;
        goto oom;
    }
    if (weir__admin_rewrite_addrs(text, strlen(text), name, addrs, n_addrs, &out, &out_len, err,
                                  sizeof(err)) < 0) {
        *status = 500;
        *body = error_body("cannot rewrite upstream '%s': %s", name, err);
        goto done;
    }
    const char *nl = memchr(out, '\n', out_len);
    const char *nv = nl ? nl + 1 : out + out_len;
    size_t nv_len = (size_t)(out + out_len - nv);
    weir_cfg_errors errs = {0};
    if (weir__etcd_source_check(src, "upstreams", name, nv, nv_len, &errs) != 0) {
        json_t *a = weir__admin_errors_json(&errs);
        json_t *j = json_pack("{s:s, s:o}", "error",
                              "the change would not load; nothing was written", "errors", a);
        weir__cfg_errors_free(&errs);
        *status = 400;
        *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        goto done;
    }
    int64_t rev = 0;
    int rc = weir__etcd_source_put(src, "upstreams", name, nv, nv_len, mod, &rev, err, sizeof(err));
    if (rc == WEIR_ETCD_FAILED) {
        *status = 409;
        *body = error_body("upstream '%s' changed in etcd since this instance read it (another "
                           "write came first): nothing was written; read it again and retry%s",
                           name, NULL);
    } else if (rc != 0) {
        *status = 503;
        *body = error_body("etcd cannot be written (%s); nothing was changed%s", err, NULL);
    } else {
        json_t *j =
            json_pack("{s:s, s:s, s:I, s:I}", "upstream", name, "written", "etcd", "revision",
                      (json_int_t)rev, "previous_mod_revision", (json_int_t)mod);
        *status = 200;
        *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
    }
    goto done;
oom:
    *status = 500;
    *body = error_body("out of memory%s%s", "", NULL);
done:
    free(value);
    free(text);
    free(out);
}
