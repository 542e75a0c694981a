/*
 * etcd_split_fuzz.c - libFuzzer target for the configuration in etcd: a
 * file cut into its sections (what `weir config push` stores), those
 * sections put back together as keys, and the load errors of the result
 * named by key. Invariants: a cut that fails names a line of the input;
 * keys from a cut assemble into text that cuts into the same sections and
 * assembles again into the same text; every load error names a key, the
 * local file or the URL, never the assembled text.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/config/config.h"
#include "app/etcd/source.h"
#include "app/etcd/split.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PREFIX "/p"
#define URL "etcd://h:1/p"

static int lines_of(const char *t, size_t n)
{
    int l = 1;
    for (size_t i = 0; i < n; i++)
        l += t[i] == '\n';
    return l;
}

/* The keys of a cut, as `weir config push` writes them; false when two
 * sections share a key (etcd holds one). */
static bool to_kvs(const weir_cfg_section *v, size_t n, weir_etcd_kvs *k)
{
    k->v = calloc(n ? n : 1, sizeof(weir_etcd_kv));
    k->n = 0;
    k->revision = 1;
    for (size_t i = 0; i < n; i++) {
        weir_etcd_kv *kv = &k->v[k->n];
        size_t cap =
            strlen(PREFIX) + strlen(v[i].section) + (v[i].name ? strlen(v[i].name) : 0) + 3;
        kv->key = malloc(cap);
        if (v[i].name)
            snprintf(kv->key, cap, "%s/%s/%s", PREFIX, v[i].section, v[i].name);
        else
            snprintf(kv->key, cap, "%s/%s", PREFIX, v[i].section);
        kv->key_len = strlen(kv->key);
        kv->value = malloc(v[i].body_len + 1);
        memcpy(kv->value, v[i].body, v[i].body_len);
        kv->value[v[i].body_len] = '\0';
        kv->value_len = v[i].body_len;
        k->n++;
        for (size_t j = 0; j + 1 < k->n; j++)
            if (strcmp(k->v[j].key, kv->key) == 0)
                return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    weir__config_resolve_names = false;
    const char *text = (const char *)data;
    weir_cfg_section *v = NULL;
    size_t n = 0;
    int el = 0;
    char err[200];
    if (weir__cfg_split(text, size, false, &v, &n, &el, err, sizeof(err)) != 0) {
        CHECK(el >= 1 && el <= lines_of(text, size) && err[0]);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        CHECK(v[i].body >= text && v[i].body + v[i].body_len <= text + size);
    weir_etcd_kvs k = {0};
    bool unique = to_kvs(v, n, &k);
    weir__cfg_sections_free(v, n);
    if (!unique) {
        weir__etcd_kvs_free(&k);
        return 0;
    }
    weir_cfg_errors errs = {0};
    size_t len = 0;
    weir_etcd_map *map = NULL;
    char *t = weir__etcd_assemble(&k, PREFIX, URL, NULL, NULL, 0, false, &len, &map, &errs);
    for (size_t i = 0; i < errs.n; i++)
        CHECK(strncmp(errs.v[i], PREFIX "/", strlen(PREFIX) + 1) == 0 ||
              strcmp(errs.v[i], "out of memory") == 0);
    if (t) {
        /* The assembled text cuts into the same keys, assembling again
         * into the same text. */
        weir_cfg_section *v2 = NULL;
        size_t n2 = 0;
        CHECK(weir__cfg_split(t, len, false, &v2, &n2, &el, err, sizeof(err)) == 0);
        CHECK(n2 == k.n);
        weir_etcd_kvs k2 = {0};
        CHECK(to_kvs(v2, n2, &k2));
        weir__cfg_sections_free(v2, n2);
        for (size_t i = 0; i < k.n; i++)
            CHECK(strcmp(k.v[i].key, k2.v[i].key) == 0);
        weir_cfg_errors errs2 = {0};
        size_t len2 = 0;
        char *t2 = weir__etcd_assemble(&k2, PREFIX, URL, NULL, NULL, 0, false, &len2, NULL, &errs2);
        CHECK(t2 && len2 == len && memcmp(t, t2, len) == 0);
        free(t2);
        weir__cfg_errors_free(&errs2);
        weir__etcd_kvs_free(&k2);
        /* Its load errors are named by key. */
        weir_config *c = weir__config_load(t, len, WEIR_ETCD_TEXT_NAME, &errs);
        if (c)
            weir__config_unref(c);
        weir__etcd_map_errors(map, &errs);
        for (size_t i = 0; i < errs.n; i++)
            CHECK(strncmp(errs.v[i], WEIR_ETCD_TEXT_NAME, strlen(WEIR_ETCD_TEXT_NAME)) != 0);
    }
    free(t);
    weir__etcd_map_free(map);
    weir__cfg_errors_free(&errs);
    weir__etcd_kvs_free(&k);
    return 0;
}
