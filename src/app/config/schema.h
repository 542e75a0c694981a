/*
 * schema.h - what each configuration section takes: every key with the
 * type of its value. The loader checks keys against these tables (an
 * unknown key is an error), and GET /api/schema serves them, so the web
 * UI's forms and the loader cannot disagree on a key's name.
 */
#ifndef WEIR_APP_CONFIG_SCHEMA_H
#define WEIR_APP_CONFIG_SCHEMA_H

/* A value's type. The loader's getters read each (docs/config.md,
 * "Values"); TABLE and ARRAY have a shape of their own, told in the docs. */
typedef enum weir_cfg_type {
    WEIR_CT_STRING,
    WEIR_CT_STRINGS, /* a string or an array of strings */
    WEIR_CT_INTEGER,
    WEIR_CT_INTEGERS, /* an array of integers */
    WEIR_CT_BOOLEAN,
    WEIR_CT_DURATION, /* "250ms", "10s", "1m30s" */
    WEIR_CT_SIZE,     /* 1048576, "64KB", "1MB" */
    WEIR_CT_TABLE,    /* an inline table, or an array of tables */
    WEIR_CT_ARRAY,    /* an array of arrays */
    /* Known only to be refused with a reason (another proxy's key that
     * weir has no use for): not in the schema. */
    WEIR_CT_REFUSED,
} weir_cfg_type;

/* One key; a table of them ends with a NULL name. */
typedef struct weir_cfg_key {
    const char *name;
    weir_cfg_type type;
    /* The values a string takes, "a|b|c" (the rest are refused), or NULL. */
    const char *choices;
} weir_cfg_key;

/* One kind of section. */
typedef struct weir_cfg_section_schema {
    const char *section; /* "basic", "servers", ...; NULL ends the table */
    const char *variant; /* a server's protocol; NULL for the others */
    const weir_cfg_key *keys;
    const char *const *except; /* of keys, those this variant refuses; NULL: none */
} weir_cfg_section_schema;

/* Every kind of section but [plugins.NAME], whose keys are each category's
 * (plugin.h, weir_plugin_def). */
extern const weir_cfg_section_schema weir__cfg_schema[];

/* The name of type t, as GET /api/schema writes it. */
const char *weir__cfg_type_name(weir_cfg_type t);

/* Each section's table (config.c, server.c, location.c, upstream.c,
 * tls.c, caches.c). */
extern const weir_cfg_key weir__cfg_keys_basic[], weir__cfg_keys_admin[], weir__cfg_keys_server[],
    weir__cfg_keys_tcp[], weir__cfg_keys_udp[], weir__cfg_keys_resp[], weir__cfg_keys_location[],
    weir__cfg_keys_upstream[], weir__cfg_keys_cert[], weir__cfg_keys_cache[];
extern const char *const weir__cfg_keys_server_l4_only[], *const weir__cfg_keys_termination[];

#endif
