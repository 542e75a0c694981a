/*
 * caches.c - [caches.NAME] sections: the sizes of a cache store, and the
 * stores themselves, kept across reloads.
 *
 *     [caches.pages]
 *     memory = "256MB"            # the memory tier (default 64 MiB)
 *     directory = "/var/cache/weir" # a disk tier, kept across restarts
 *     disk_size = "10GB"          # its bound (default 1 GiB)
 *     max_file_size = "8MB"       # a larger body is passed through
 *
 * A store lives as long as a snapshot names it: a reload that keeps a
 * section unchanged keeps its store and what it holds; a changed section
 * gets a new store (the old one goes with the old snapshot). A cache
 * plugin that names no storage uses "default", made with the defaults
 * when there is no [caches.default].
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/config/config.h"
#include "app/config/read.h"
#include "weir/cache.h"

const weir_cfg_key weir__cfg_keys_cache[] = {{"memory", WEIR_CT_SIZE, NULL},
                                             {"directory", WEIR_CT_STRING, NULL},
                                             {"disk_size", WEIR_CT_SIZE, NULL},
                                             {"max_file_size", WEIR_CT_SIZE, NULL},
                                             {NULL, 0, NULL}};

void weir__cfg_load_caches(loader *ld, const weir_toml_value *sec)
{
    weir_config *c = ld->cfg;
    size_t n = weir_toml_table_count(sec);
    c->caches = calloc(n ? n : 1, sizeof(*c->caches));
    if (!c->caches)
        return;
    for (size_t i = 0; i < n; i++) {
        weir_toml_entry e;
        weir_toml_table_entry(sec, i, &e);
        weir_cfg_cache *k = &c->caches[c->n_caches++];
        k->name = strdup(e.key);
        k->line = e.line;
        char section[300];
        snprintf(section, sizeof(section), "caches.%s", e.key);
        if (weir_toml_type_of(e.value) != WEIR_TOML_TABLE) {
            weir__cfg_err_at(ld, e.line, "[%s] must be a table", section);
            continue;
        }
        weir__cfg_check_keys(ld, e.value, section, weir__cfg_keys_cache);
        weir__cfg_get_size(ld, e.value, "memory", section, 1ull << 40, &k->memory);
        weir__cfg_get_size(ld, e.value, "disk_size", section, 1ull << 50, &k->disk);
        weir__cfg_get_size(ld, e.value, "max_file_size", section, 1ull << 32, &k->max_file);
        bool present = false;
        k->directory = weir__cfg_dup_string(ld, e.value, "directory", section, &present);
        if (k->memory && k->memory < 64 * 1024)
            weir__cfg_err_at(ld, e.line, "'memory' in [%s] must be at least 64KB", section);
        if (present && (!k->directory || k->directory[0] != '/'))
            weir__cfg_err_at(ld, e.line, "'directory' in [%s] must be an absolute path", section);
        if (k->disk && !present)
            weir__cfg_err_at(ld, e.line, "'disk_size' in [%s] needs 'directory'", section);
    }
}

weir_cfg_cache *weir__cfg_cache_find(loader *ld, const char *name)
{
    weir_config *c = ld->cfg;
    for (size_t i = 0; i < c->n_caches; i++)
        if (strcmp(c->caches[i].name, name) == 0)
            return &c->caches[i];
    if (strcmp(name, "default") != 0)
        return NULL;
    /* The implicit default; the array may move, so plugins link by name
     * (weir__cfg_cache_named) once loading is over. */
    weir_cfg_cache *v = realloc(c->caches, (c->n_caches + 1) * sizeof(*v));
    if (!v)
        return NULL;
    c->caches = v;
    weir_cfg_cache *k = &c->caches[c->n_caches++];
    memset(k, 0, sizeof(*k));
    k->name = strdup("default");
    return k;
}

weir_cfg_cache *weir__cfg_cache_named(weir_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_caches; i++)
        if (strcmp(c->caches[i].name, name) == 0)
            return &c->caches[i];
    return NULL;
}

static bool same(const weir_cfg_cache *a, const weir_cfg_cache *b)
{
    return strcmp(a->name, b->name) == 0 && a->memory == b->memory && a->disk == b->disk &&
           a->max_file == b->max_file &&
           (a->directory ? b->directory && strcmp(a->directory, b->directory) == 0 : !b->directory);
}

bool weir__cfg_cache_stores(weir_config *cfg, const weir_config *old)
{
    for (size_t i = 0; i < cfg->n_caches; i++) {
        weir_cfg_cache *k = &cfg->caches[i];
        if (k->store)
            continue;
        for (size_t j = 0; old && j < old->n_caches; j++) {
            if (old->caches[j].store && same(k, &old->caches[j])) {
                k->store = old->caches[j].store;
                atomic_fetch_add_explicit(&k->store->refs, 1, memory_order_relaxed);
                break;
            }
        }
        if (k->store)
            continue;
        weir_cache_options o = {.memory_bytes = k->memory,
                                .disk_dir = k->directory,
                                .disk_bytes = k->disk,
                                .max_object_bytes = k->max_file};
        char err[256] = "";
        weir_cache *c = weir_cache_new(&o, err, sizeof(err));
        weir_cache_store *st = c ? calloc(1, sizeof(*st)) : NULL;
        if (!st) {
            weir_log(WEIR_LEVEL_ERROR, "%s: [caches.%s]: %s", cfg->file, k->name,
                     c ? "out of memory" : err);
            weir_cache_free(c);
            return false;
        }
        atomic_init(&st->refs, 1);
        st->c = c;
        k->store = st;
    }
    return true;
}

void weir__cfg_free_caches(weir_config *c)
{
    for (size_t i = 0; i < c->n_caches; i++) {
        weir_cfg_cache *k = &c->caches[i];
        if (k->store && atomic_fetch_sub_explicit(&k->store->refs, 1, memory_order_acq_rel) == 1) {
            weir_cache_free(k->store->c);
            free(k->store);
        }
        free(k->name);
        free(k->directory);
    }
    free(c->caches);
}
