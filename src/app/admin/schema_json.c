/*
 * schema_json.c - GET /api/schema: what each kind of section takes, from
 * the tables the loader checks keys with (config/schema.h) and each
 * plugin category's (plugin.h). The web UI builds its forms from it, so a
 * new key or plugin needs no change there.
 */
#include <jansson.h>
#include <string.h>

#include "app/admin/admin.h"
#include "app/config/schema.h"
#include "app/plugin/plugin.h"

static bool listed(const char *const *names, const char *name)
{
    for (size_t i = 0; names && names[i]; i++) {
        if (strcmp(names[i], name) == 0)
            return true;
    }
    return false;
}

/* [{"name", "type"[, "choices"]}, ...] of keys, but for except. */
static json_t *keys_json(const weir_cfg_key *keys, const char *const *except)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && keys && keys[i].name; i++) {
        if (keys[i].type == WEIR_CT_REFUSED || listed(except, keys[i].name))
            continue;
        json_t *k = json_pack("{s:s, s:s}", "name", keys[i].name, "type",
                              weir__cfg_type_name(keys[i].type));
        if (k && keys[i].choices) {
            json_t *c = json_array();
            for (const char *p = keys[i].choices; c && *p;) {
                const char *bar = strchr(p, '|');
                size_t n = bar ? (size_t)(bar - p) : strlen(p);
                json_array_append_new(c, json_stringn(p, n));
                p += n + (bar ? 1 : 0);
            }
            json_object_set_new(k, "choices", c);
        }
        json_array_append_new(arr, k);
    }
    return arr;
}

static json_t *plugins_json(void)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < weir__n_plugin_defs; i++) {
        const weir_plugin_def *d = weir__plugin_defs[i];
        json_t *steps = json_array();
        for (int s = 0; steps && s < WEIR_STEP_COUNT; s++) {
            if (d->steps & WEIR_STEP_BIT(s))
                json_array_append_new(steps, json_string(weir__plugin_step_name(s)));
        }
        json_object_set_new(o, d->category,
                            json_pack("{s:o, s:s, s:o}", "keys", keys_json(d->keys, NULL),
                                      "default_step", weir__plugin_step_name(d->default_step),
                                      "steps", steps));
    }
    return o;
}

json_t *weir__schema_json(void)
{
    json_t *sections = json_object();
    for (const weir_cfg_section_schema *s = weir__cfg_schema; sections && s->section; s++) {
        json_t *keys = keys_json(s->keys, s->except);
        if (!s->variant) {
            json_object_set_new(sections, s->section, json_pack("{s:o}", "keys", keys));
            continue;
        }
        /* Sections of several kinds: one key (a server's protocol) says which. */
        json_t *sec = json_object_get(sections, s->section);
        if (!sec) {
            sec = json_pack("{s:s, s:{}}", "variant_key", "protocol", "variants");
            json_object_set_new(sections, s->section, sec);
        }
        json_object_set_new(json_object_get(sec, "variants"), s->variant,
                            json_pack("{s:o}", "keys", keys));
    }
    return json_pack("{s:o, s:o}", "sections", sections, "plugins", plugins_json());
}
