/*
 * plugins.c - [plugins.NAME] tables and the plugin chains of locations and
 * servers (see app/plugin/plugin.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/config/config.h"
#include "app/config/read.h"
#include "app/plugin/plugin.h"
#include "app/plugin/plugins.h"
#include "app/toml/toml.h"

#define MAX_KEYS 48

static void load_one(loader *ld, weir_plugin *p, const weir_toml_value *t)
{
    char section[300];
    snprintf(section, sizeof(section), "plugins.%s", p->name);
    if (weir_toml_type_of(t) != WEIR_TOML_TABLE) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] must be a table", section);
        return;
    }
    bool present;
    char *category = weir__cfg_dup_string(ld, t, "category", section, &present);
    if (!category) {
        if (!present)
            weir__cfg_err_at(ld, p->line, "[%s] needs 'category'", section);
        return;
    }
    const weir_plugin_def *def = weir__plugin_def(category);
    if (!def || !def->parse) {
        const char *known[64] = {0};
        size_t k = 0;
        for (size_t i = 0; i < weir__n_plugin_defs && k < 63; i++) {
            if (weir__plugin_defs[i]->parse)
                known[k++] = weir__plugin_defs[i]->category;
        }
        const char *s = weir__cfg_suggest(category, known);
        weir_toml_entry e;
        weir__cfg_entry_of(t, "category", &e);
        weir__cfg_err_at(ld, e.line, "[%s]: unknown plugin category '%s'%s%s%s", section, category,
                         s ? "; did you mean '" : "", s ? s : "", s ? "'?" : "");
        free(category);
        return;
    }
    free(category);
    p->def = def;
    p->step = def->default_step;
    weir_cfg_key keys[MAX_KEYS] = {{"category", WEIR_CT_STRING, NULL},
                                   {"step", WEIR_CT_STRING, NULL}};
    size_t nk = 2;
    for (const weir_cfg_key *k = def->keys; k && k->name && nk < MAX_KEYS - 1; k++)
        keys[nk++] = *k;
    keys[nk] = (weir_cfg_key){0};
    weir__cfg_check_keys(ld, t, section, keys);
    char *step = weir__cfg_dup_string(ld, t, "step", section, &present);
    if (step) {
        int st = weir__plugin_step_of(step);
        weir_toml_entry e;
        weir__cfg_entry_of(t, "step", &e);
        if (st < 0 || (!(def->steps & WEIR_STEP_BIT(st)) && st != (int)def->default_step)) {
            char allowed[160] = "";
            for (int i = 0; i < WEIR_STEP_COUNT; i++) {
                if (def->steps & WEIR_STEP_BIT(i)) {
                    size_t n = strlen(allowed);
                    snprintf(allowed + n, sizeof(allowed) - n, "%s%s", n ? ", " : "",
                             weir__plugin_step_name((weir_plugin_step)i));
                }
            }
            weir__cfg_err_at(ld, e.line, "'step' in [%s]: a %s plugin runs at %s, not '%s'",
                             section, def->category,
                             allowed[0] ? allowed : weir__plugin_step_name(def->default_step),
                             step);
        } else {
            p->step = (weir_plugin_step)st;
        }
        free(step);
    }
    if (!def->parse(ld, t, section, &p->conf))
        p->conf = NULL;
}

void weir__cfg_load_plugins(loader *ld, const weir_toml_value *sec)
{
    weir_config *c = ld->cfg;
    size_t n = weir_toml_table_count(sec);
    c->plugins = calloc(n ? n : 1, sizeof(*c->plugins));
    if (!c->plugins)
        return;
    for (size_t i = 0; i < n; i++) {
        weir_toml_entry e;
        weir_toml_table_entry(sec, i, &e);
        weir_plugin *p = calloc(1, sizeof(*p));
        if (!p || !(p->name = strndup(e.key, e.key_len))) {
            free(p);
            weir__cfg_err_at(ld, e.line, "out of memory");
            return;
        }
        p->line = e.line;
        c->plugins[c->n_plugins++] = p;
        load_one(ld, p, e.value);
    }
}

static weir_plugin *find_plugin(const weir_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_plugins; i++) {
        if (strcmp(c->plugins[i]->name, name) == 0)
            return c->plugins[i];
    }
    return NULL;
}

/* The hook of p that runs in chain k. */
static bool hooks(const weir_plugin *p, int k)
{
    const weir_plugin_def *d = p->def;
    if (!d)
        return false;
    switch (k) {
    case WEIR_STEP_UPSTREAM_RESPONSE:
        return d->upstream_response != NULL;
    case WEIR_STEP_RESPONSE:
        return d->response != NULL;
    case WEIR_CFG_CHAIN_RESPONSE_BODY:
        return d->response_body != NULL;
    case WEIR_CFG_CHAIN_LOGGING:
        return d->logging != NULL;
    case WEIR_CFG_CHAIN_REQUEST_BODY:
        return d->request_body != NULL;
    default:
        return d->request && p->step == (weir_plugin_step)k;
    }
}

static bool add(weir_cfg_location *l, weir_plugin *p)
{
    if (!p)
        return false;
    weir_plugin **nv = realloc(l->plugins, (l->n_plugins + 1) * sizeof(*nv));
    if (!nv)
        return false;
    l->plugins = nv;
    l->plugins[l->n_plugins++] = p;
    return true;
}

/* p, about to join chain k after the chain's last plugin, merged into it
 * instead when their category can (plugin.h merge): true if done. A merge
 * that fails (out of memory) leaves them apart, which works the same. */
static bool fuse(weir_cfg_location *l, weir_plugin_chain *ch, int k, weir_plugin *p,
                 const char *owner)
{
    const weir_plugin_def *d = p->def;
    if (!ch->n || k >= WEIR_CFG_CHAIN_RESPONSE_BODY || !d->merge || d->ctx_size || d->state_new)
        return false;
    weir_plugin_ref *last = &ch->v[ch->n - 1];
    if (last->p->def != d || last->p->step != p->step)
        return false;
    weir_plugin **nv = realloc(l->fused, (l->n_fused + 1) * sizeof(*nv));
    if (!nv)
        return false;
    l->fused = nv;
    void *conf = d->merge(last->p->conf, p->conf);
    weir_plugin *f = conf ? weir__plugin_builtin(d, owner, conf) : NULL;
    if (!f)
        return false;
    f->step = p->step;
    l->fused[l->n_fused++] = f;
    last->p = f;
    return true;
}

void weir__cfg_location_chains(loader *ld, weir_cfg_location *l, int line)
{
    const weir_config *c = ld->cfg;
    char owner[300];
    snprintf(owner, sizeof(owner), "locations.%s", l->name);
    /* The location's own rules first, as they ran before plugins existed;
     * echo, which stands for the upstream, last. */
    bool ok = true;
    if (l->has_max_body) {
        uint64_t *size = malloc(sizeof(*size));
        if (size)
            *size = l->client_max_body_size;
        ok &= size && add(l, weir__plugin_builtin(&weir__plugin_body_limit, owner, size));
    }
    if (l->rewrite_re)
        ok &= add(l, weir__plugin_builtin(&weir__plugin_rewrite, owner, l));
    if (l->proxy_set.n || l->proxy_add.n || l->proxy_remove.n)
        ok &= add(l, weir__plugin_builtin(&weir__plugin_request_headers, owner,
                                          weir__plugin_headers_borrow(
                                              &l->proxy_remove, &l->proxy_set, &l->proxy_add)));
    if (!l->echo && (l->resp_set.n || l->resp_add.n || l->resp_remove.n))
        ok &= add(l, weir__plugin_builtin(
                         &weir__plugin_response_headers, owner,
                         weir__plugin_headers_borrow(&l->resp_remove, &l->resp_set, &l->resp_add)));
    for (size_t i = 0; ok && i < l->n_plugin_names; i++) {
        weir_plugin *p = find_plugin(c, l->plugin_names[i]);
        if (!p) {
            const char *known[64] = {0};
            for (size_t k = 0; k < c->n_plugins && k < 63; k++)
                known[k] = c->plugins[k]->name;
            const char *s = weir__cfg_suggest(l->plugin_names[i], known);
            weir__cfg_err_at(ld, line, "[%s] refers to undefined plugin '%s'%s%s%s", owner,
                             l->plugin_names[i], s ? "; did you mean '" : "", s ? s : "",
                             s ? "'?" : "");
            continue;
        }
        ok &= add(l, p);
    }
    if (l->echo)
        ok &= add(l, weir__plugin_builtin(&weir__plugin_echo, owner, NULL));
    if (!ok) {
        weir__cfg_err_at(ld, line, "out of memory");
        return;
    }
    bool answered = false;
    for (size_t i = 0; i < l->n_plugins; i++)
        answered |= l->plugins[i]->def && l->plugins[i]->def->answers &&
                    l->plugins[i]->step != WEIR_STEP_PROXY_UPSTREAM;
    if (l->no_upstream && !answered)
        weir__cfg_err_at(ld, line,
                         "[%s] needs 'upstream' (or echo = true, or a plugin that answers every "
                         "request, such as a directory)",
                         owner);
    for (int k = 0; k < WEIR_CFG_CHAINS; k++) {
        weir_plugin_chain *ch = &l->chains[k];
        /* Two rounds on the response side: the plugins that run last
         * (plugin.h runs_last) after all others. */
        bool ordered = k == WEIR_STEP_RESPONSE || k == WEIR_CFG_CHAIN_RESPONSE_BODY;
        for (size_t j = 0; j < l->n_plugins * (ordered ? 2 : 1); j++) {
            size_t i = j % l->n_plugins;
            if (!hooks(l->plugins[i], k) ||
                (ordered && l->plugins[i]->def->runs_last != (j >= l->n_plugins)))
                continue;
            if (fuse(l, ch, k, l->plugins[i], owner))
                continue;
            weir_plugin_ref *nv = realloc(ch->v, (ch->n + 1u) * sizeof(*nv));
            if (!nv) {
                weir__cfg_err_at(ld, line, "out of memory");
                return;
            }
            ch->v = nv;
            const weir_plugin_def *d = l->plugins[i]->def;
            weir_plugin_hook hook = k == WEIR_STEP_UPSTREAM_RESPONSE   ? d->upstream_response
                                    : k == WEIR_STEP_RESPONSE          ? d->response
                                    : k < WEIR_CFG_CHAIN_RESPONSE_BODY ? d->request
                                                                       : NULL;
            ch->v[ch->n++] = (weir_plugin_ref){l->plugins[i], hook, d->ctx_size != 0, (uint16_t)i};
        }
    }
}

void weir__cfg_free_location_chains(weir_cfg_location *l)
{
    for (size_t i = 0; i < l->n_plugins; i++) {
        if (l->plugins[i]->builtin)
            weir__plugin_free(l->plugins[i]);
    }
    free(l->plugins);
    for (int k = 0; k < WEIR_CFG_CHAINS; k++)
        free(l->chains[k].v);
    for (size_t i = 0; i < l->n_fused; i++)
        weir__plugin_free(l->fused[i]);
    free(l->fused);
    weir__cfg_free_list(l->plugin_names, l->n_plugin_names);
}

void weir__cfg_free_plugins(weir_config *c)
{
    for (size_t i = 0; i < c->n_plugins; i++)
        weir__plugin_free(c->plugins[i]);
    free(c->plugins);
}
