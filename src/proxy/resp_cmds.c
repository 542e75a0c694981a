/*
 * resp_cmds.c - the reply writers of weir/resp.h, and the commands a RESP
 * service answers without its application: PING, ECHO, SELECT, QUIT,
 * HELLO, RESET, COMMAND, CLIENT and CONFIG GET, with redis-server's replies and error
 * texts (clients and redis-cli depend on both).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/resp_server.h"
#include "proxy/service.h"
#include "weir/server.h"

void weir_resp_reply_simple(weir_resp_conn *c, const char *s)
{
    if (c->out)
        weir__resp_simple(c->out, s);
}

void weir_resp_reply_error(weir_resp_conn *c, const char *s)
{
    if (c->out)
        weir__resp_error(c->out, s);
}

void weir_resp_reply_int(weir_resp_conn *c, int64_t v)
{
    if (c->out)
        weir__resp_int(c->out, v);
}

void weir_resp_reply_bulk(weir_resp_conn *c, const void *p, size_t n)
{
    if (c->out)
        weir__resp_bulk(c->out, p, n);
}

void weir_resp_reply_nil(weir_resp_conn *c)
{
    if (c->out)
        weir__resp_nil(c->out);
}

void weir_resp_reply_array(weir_resp_conn *c, size_t n)
{
    if (c->out)
        weir__resp_array(c->out, n);
}

void weir_resp_reply_map(weir_resp_conn *c, size_t n)
{
    if (c->out)
        weir__resp_map(c->out, n);
}

static bool is(weir_str a, const char *name)
{
    size_t n = strlen(name);
    return a.len == n && strncasecmp(a.ptr, name, n) == 0;
}

static void str(weir_resp_conn *c, const char *s)
{
    weir_resp_reply_bulk(c, s, strlen(s));
}

/* Appends at most `max` bytes of a as "'...' " to b (a NUL-terminated
 * buffer of cap bytes); control characters become spaces. */
static void quoted(char *b, size_t cap, weir_str a, size_t max)
{
    size_t n = strlen(b);
    if (n + 4 > cap)
        return;
    b[n++] = '\'';
    for (size_t i = 0; i < a.len && i < max && n + 3 < cap; i++) {
        unsigned char ch = (unsigned char)a.ptr[i];
        b[n++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    b[n++] = '\'';
    b[n++] = ' ';
    b[n] = '\0';
}

void weir__resp_unknown(weir_resp_conn *c, const weir_str *argv, size_t argc)
{
    char b[512] = "ERR unknown command ";
    quoted(b, sizeof(b), argv[0], 128);
    size_t n = strlen(b);
    b[n - 1] = ','; /* "'name', with args beginning with: " */
    snprintf(b + n, sizeof(b) - n, " with args beginning with: ");
    for (size_t i = 1; i < argc && strlen(b) < 300; i++)
        quoted(b, sizeof(b), argv[i], 128);
    weir_resp_reply_error(c, b);
}

static void wrong_args(weir_resp_conn *c, const char *name)
{
    char b[160];
    snprintf(b, sizeof(b), "ERR wrong number of arguments for '%s' command", name);
    weir_resp_reply_error(c, b);
}

static void unknown_sub(weir_resp_conn *c, weir_str sub, const char *cmd)
{
    char b[300] = "ERR unknown subcommand ";
    quoted(b, sizeof(b), sub, 128);
    size_t n = strlen(b) - 1; /* over the trailing space */
    snprintf(b + n, sizeof(b) - n, ". Try %s HELP.", cmd);
    weir_resp_reply_error(c, b);
}

/* A whole decimal integer (as redis' string2ll: no sign on 0, no spaces). */
static bool integer(weir_str a, long long *out)
{
    if (a.len == 0 || a.len > 20)
        return false;
    char b[24];
    memcpy(b, a.ptr, a.len);
    b[a.len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(b, &end, 10);
    if (*end || errno == ERANGE || !isdigit((unsigned char)b[b[0] == '-']) ||
        (b[b[0] == '-'] == '0' && a.len > 1))
        return false;
    *out = v;
    return true;
}

/* ---- COMMAND ---- */

static const char *const f_fast[] = {"fast", NULL};
static const char *const f_stale[] = {"loading", "stale", "fast", NULL};
static const char *const f_noscript[] = {"noscript", "loading", "stale", "fast", NULL};
static const char *const f_slow[] = {"loading", "stale", NULL};

static const weir_resp_command_info builtins[] = {
    {"ping", -1, f_fast, 0, 0, 0},      {"echo", 2, f_fast, 0, 0, 0},
    {"select", 2, f_stale, 0, 0, 0},    {"quit", -1, f_noscript, 0, 0, 0},
    {"hello", -1, f_noscript, 0, 0, 0}, {"reset", 1, f_noscript, 0, 0, 0},
    {"command", -1, f_slow, 0, 0, 0},   {"client", -2, f_slow, 0, 0, 0},
    {"config", -2, f_slow, 0, 0, 0},
};
#define N_BUILTINS (sizeof(builtins) / sizeof(builtins[0]))

static size_t n_commands(const weir_resp_conn *c)
{
    return N_BUILTINS + c->svc->resp_ops->n_commands;
}

static const weir_resp_command_info *command_at(const weir_resp_conn *c, size_t i)
{
    return i < N_BUILTINS ? &builtins[i] : &c->svc->resp_ops->commands[i - N_BUILTINS];
}

static const weir_resp_command_info *command_named(const weir_resp_conn *c, weir_str name)
{
    for (size_t i = 0; i < n_commands(c); i++) {
        if (is(name, command_at(c, i)->name))
            return command_at(c, i);
    }
    return NULL;
}

/* One command's entry, as redis 7 writes it: name, arity, flags, first
 * key, last key, step, ACL categories, tips, key specs, subcommands. */
static void command_entry(weir_resp_conn *c, const weir_resp_command_info *ci)
{
    weir_resp_reply_array(c, 10);
    str(c, ci->name);
    weir_resp_reply_int(c, ci->arity);
    size_t nf = 0;
    while (ci->flags && ci->flags[nf])
        nf++;
    weir_resp_reply_array(c, nf);
    for (size_t i = 0; i < nf; i++)
        weir_resp_reply_simple(c, ci->flags[i]);
    weir_resp_reply_int(c, ci->first_key);
    weir_resp_reply_int(c, ci->last_key);
    weir_resp_reply_int(c, ci->key_step);
    for (int i = 0; i < 4; i++)
        weir_resp_reply_array(c, 0);
}

static void command(weir_resp_conn *c, const weir_str *argv, size_t argc)
{
    size_t n = n_commands(c);
    if (argc == 1) {
        weir_resp_reply_array(c, n);
        for (size_t i = 0; i < n; i++)
            command_entry(c, command_at(c, i));
    } else if (is(argv[1], "count") && argc == 2) {
        weir_resp_reply_int(c, (int64_t)n);
    } else if (is(argv[1], "list") && argc == 2) {
        weir_resp_reply_array(c, n);
        for (size_t i = 0; i < n; i++)
            str(c, command_at(c, i)->name);
    } else if (is(argv[1], "info")) {
        if (argc == 2) {
            weir_resp_reply_array(c, n);
            for (size_t i = 0; i < n; i++)
                command_entry(c, command_at(c, i));
            return;
        }
        weir_resp_reply_array(c, argc - 2);
        for (size_t i = 2; i < argc; i++) {
            const weir_resp_command_info *ci = command_named(c, argv[i]);
            if (ci)
                command_entry(c, ci);
            else
                weir_resp_reply_nil(c);
        }
    } else if (is(argv[1], "docs")) {
        /* No documentation: redis-cli then offers no hints. */
        weir_resp_reply_map(c, 0);
    } else if (is(argv[1], "help") && argc == 2) {
        weir_resp_reply_array(c, 4);
        weir_resp_reply_simple(c, "COMMAND [<subcommand> [<arg> [value] [opt] ...]]");
        weir_resp_reply_simple(c, "COUNT | LIST | INFO [<command-name> ...] | DOCS");
        weir_resp_reply_simple(c, "    Information on the commands this server answers.");
        weir_resp_reply_simple(c, "HELP");
    } else {
        unknown_sub(c, argv[1], "COMMAND");
    }
}

/* ---- HELLO, CLIENT ---- */

static void hello(weir_resp_conn *c, const weir_str *argv, size_t argc)
{
    long long proto = c->resp3 ? 3 : 2;
    size_t i = 1;
    if (argc > 1) {
        if (!integer(argv[1], &proto)) {
            weir_resp_reply_error(c, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (proto != 2 && proto != 3) {
            weir_resp_reply_error(c, "NOPROTO unsupported protocol version");
            return;
        }
        i = 2;
    }
    weir_str name = {NULL, 0};
    for (; i < argc; i++) {
        if (is(argv[i], "auth") && i + 2 < argc) {
            i += 2; /* no users: as redis-server's default user, nopass */
        } else if (is(argv[i], "setname") && i + 1 < argc) {
            name = argv[++i];
        } else {
            char b[200] = "ERR Syntax error in HELLO option ";
            quoted(b, sizeof(b), argv[i], 64);
            size_t bn = strlen(b);
            if (b[bn - 1] == ' ')
                b[bn - 1] = '\0'; /* no trailing space, as redis-server's */
            weir_resp_reply_error(c, b);
            return;
        }
    }
    if (name.ptr) {
        size_t n = name.len < sizeof(c->name) - 1 ? name.len : sizeof(c->name) - 1;
        memcpy(c->name, name.ptr, n);
        c->name[n] = '\0';
    }
    c->resp3 = proto == 3;
    c->out->resp3 = c->resp3;
    const weir_resp_options *o = &c->svc->resp;
    weir_resp_reply_map(c, 7);
    str(c, "server");
    str(c, o->name);
    str(c, "version");
    str(c, o->version);
    str(c, "proto");
    weir_resp_reply_int(c, proto);
    str(c, "id");
    weir_resp_reply_int(c, (int64_t)c->id);
    str(c, "mode");
    str(c, "standalone");
    str(c, "role");
    str(c, "master");
    str(c, "modules");
    weir_resp_reply_array(c, 0);
}

static void client(weir_resp_conn *c, const weir_str *argv, size_t argc)
{
    if (is(argv[1], "id") && argc == 2) {
        weir_resp_reply_int(c, (int64_t)c->id);
    } else if (is(argv[1], "getname") && argc == 2) {
        if (c->name[0])
            str(c, c->name);
        else
            weir_resp_reply_nil(c);
    } else if (is(argv[1], "setname") && argc == 3) {
        for (size_t i = 0; i < argv[2].len; i++) {
            if (argv[2].ptr[i] <= ' ' || argv[2].ptr[i] == 0x7f) {
                weir_resp_reply_error(c, "ERR Client names cannot contain spaces, newlines or "
                                         "special characters.");
                return;
            }
        }
        size_t n = argv[2].len < sizeof(c->name) - 1 ? argv[2].len : sizeof(c->name) - 1;
        memcpy(c->name, argv[2].ptr, n);
        c->name[n] = '\0';
        weir_resp_reply_simple(c, "OK");
    } else if (is(argv[1], "setinfo") && argc == 4) {
        weir_resp_reply_simple(c, "OK"); /* lib-name, lib-ver: noted by nobody */
    } else {
        unknown_sub(c, argv[1], "CLIENT");
    }
}

bool weir__resp_builtin(weir_resp_conn *c, const weir_str *argv, size_t argc)
{
    weir_str cmd = argv[0];
    if (is(cmd, "ping")) {
        if (argc > 2)
            wrong_args(c, "ping");
        else if (argc == 2)
            weir_resp_reply_bulk(c, argv[1].ptr, argv[1].len);
        else
            weir_resp_reply_simple(c, "PONG");
    } else if (is(cmd, "echo")) {
        if (argc != 2)
            wrong_args(c, "echo");
        else
            weir_resp_reply_bulk(c, argv[1].ptr, argv[1].len);
    } else if (is(cmd, "select")) {
        long long db;
        if (argc != 2)
            wrong_args(c, "select");
        else if (!integer(argv[1], &db))
            weir_resp_reply_error(c, "ERR value is not an integer or out of range");
        else if (db < 0 || db > 15)
            weir_resp_reply_error(c, "ERR DB index is out of range");
        else
            weir_resp_reply_simple(c, "OK"); /* one keyspace: every db is it */
    } else if (is(cmd, "quit")) {
        weir_resp_reply_simple(c, "OK");
        c->quit = true;
    } else if (is(cmd, "hello")) {
        hello(c, argv, argc);
    } else if (is(cmd, "reset")) {
        c->resp3 = false;
        c->out->resp3 = false;
        c->name[0] = '\0';
        weir_resp_reply_simple(c, "RESET");
    } else if (is(cmd, "command")) {
        command(c, argv, argc);
    } else if (is(cmd, "config")) {
        /* Nothing is configured over the protocol: GET finds no
         * parameter (redis-benchmark asks for two at its start). */
        if (argc < 2)
            wrong_args(c, "config");
        else if (is(argv[1], "get") && argc >= 3)
            weir_resp_reply_map(c, 0);
        else if (is(argv[1], "get"))
            wrong_args(c, "config|get");
        else
            unknown_sub(c, argv[1], "CONFIG");
    } else if (is(cmd, "client")) {
        if (argc < 2)
            wrong_args(c, "client");
        else
            client(c, argv, argc);
    } else {
        return false;
    }
    return true;
}
