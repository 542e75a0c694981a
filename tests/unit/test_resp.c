/*
 * test_resp.c - the Redis protocol's framing (src/net/resp.c): commands
 * in both forms, every prefix asking for more, pipelined commands, the
 * limits, inline quoting as redis-cli writes it, malformed frames; and
 * replies of RESP2 and RESP3, nested, with attributes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "net/resp.h"

static weir_str args[1024];
static char scratch[70000];

static long cmd(const char *s, size_t *argc, const char **why)
{
    return weir__resp_command(s, strlen(s), NULL, args, argc, scratch, sizeof(scratch), why);
}

static bool arg_is(size_t i, const char *want)
{
    return args[i].len == strlen(want) && memcmp(args[i].ptr, want, args[i].len) == 0;
}

Test(resp, multibulk_command_and_every_prefix)
{
    const char *s = "*2\r\n$3\r\nGET\r\n$10\r\n/a/b?c=d e\r\n";
    size_t argc;
    const char *why;
    cr_assert_eq(cmd(s, &argc, &why), (long)strlen(s));
    cr_assert_eq(argc, 2);
    cr_assert(arg_is(0, "GET") && arg_is(1, "/a/b?c=d e"));
    for (size_t k = 0; k < strlen(s); k++) {
        long r = weir__resp_command(s, k, NULL, args, &argc, scratch, sizeof(scratch), &why);
        cr_assert_eq(r, WEIR_RESP_MORE, "prefix %zu: %ld", k, r);
    }
}

Test(resp, pipelined_commands_one_at_a_time)
{
    const char *s = "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\nPING\r\n";
    size_t argc, off = 0, n = strlen(s);
    const char *why;
    const char *want[] = {"PING", "ECHO", "PING"};
    for (int i = 0; i < 3; i++) {
        long r =
            weir__resp_command(s + off, n - off, NULL, args, &argc, scratch, sizeof(scratch), &why);
        cr_assert_gt(r, 0);
        cr_assert(arg_is(0, want[i]));
        off += (size_t)r;
    }
    cr_assert_eq(off, n);
}

Test(resp, binary_arguments)
{
    char s[64];
    memcpy(s, "*1\r\n$4\r\n\0\r\n\xff\r\n", 14);
    size_t argc;
    const char *why;
    cr_assert_eq(weir__resp_command(s, 14, NULL, args, &argc, scratch, sizeof(scratch), &why), 14);
    cr_assert_eq(args[0].len, 4);
    cr_assert_eq(memcmp(args[0].ptr, "\0\r\n\xff", 4), 0);
}

Test(resp, empty_commands_are_taken)
{
    size_t argc;
    const char *why;
    cr_assert_eq(cmd("*0\r\n", &argc, &why), 4);
    cr_assert_eq(argc, 0);
    cr_assert_eq(cmd("*-1\r\n", &argc, &why), 5);
    cr_assert_eq(argc, 0);
    cr_assert_eq(cmd("\r\n", &argc, &why), 2);
    cr_assert_eq(argc, 0);
    cr_assert_eq(cmd("   \n", &argc, &why), 4);
    cr_assert_eq(argc, 0);
}

Test(resp, inline_commands_and_quotes)
{
    size_t argc;
    const char *why;
    cr_assert_eq(cmd("GET  key\r\n", &argc, &why), 10);
    cr_assert(argc == 2 && arg_is(0, "GET") && arg_is(1, "key"));
    const char *q = "set \"a b\" 'it\\'s' \"\\x41\\n\\t\\\"\"\n";
    cr_assert_eq(cmd(q, &argc, &why), (long)strlen(q));
    cr_assert_eq(argc, 4);
    cr_assert(arg_is(1, "a b") && arg_is(2, "it's") && arg_is(3, "A\n\t\""));
    cr_assert_eq(cmd("GET no-newline-yet", &argc, &why), WEIR_RESP_MORE);
    cr_assert_eq(cmd("GET \"open\n", &argc, &why), WEIR_RESP_BAD);
    cr_assert_str_eq(why, "Protocol error: unbalanced quotes in request");
    cr_assert_eq(cmd("GET \"a\"b\n", &argc, &why), WEIR_RESP_BAD);
    cr_assert_eq(cmd("GET 'a\n", &argc, &why), WEIR_RESP_BAD);
}

Test(resp, malformed_multibulk)
{
    size_t argc;
    const char *why;
    const char *bad[] = {"*x\r\n", "*1\r\n#3\r\nGET\r\n", "*1\r\n$-3\r\n", "*1\r\n$3\r\nGETXX",
                         "*1\r\n$3\nGET\r\n", "*+1\r\n$1\r\na\r\n", "*1\r\n$ 1\r\na\r\n",
                         "*1\r\n$99999999999999999999\r\n",
                         /* redis' string2ll: no leading zero, no -0 */
                         "*01\r\n$1\r\na\r\n", "*1\r\n$01\r\na\r\n", "*-0\r\n", "*1\r\n$-0\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        long r = cmd(bad[i], &argc, &why);
        cr_assert_eq(r, WEIR_RESP_BAD, "%s: %ld", bad[i], r);
        cr_assert_not_null(why);
    }
    /* A length line that never ends is refused, not waited for. */
    char longline[64];
    memset(longline, '1', sizeof(longline));
    longline[0] = '*';
    cr_assert_eq(weir__resp_command(longline, sizeof(longline), NULL, args, &argc, scratch,
                                    sizeof(scratch), &why),
                 WEIR_RESP_BAD);
}

Test(resp, limits)
{
    weir_resp_limits lim = {.max_args = 3, .max_bulk = 5, .max_inline = 16};
    size_t argc;
    const char *why;
    const char *four = "*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n";
    cr_assert_eq(
        weir__resp_command(four, strlen(four), &lim, args, &argc, scratch, sizeof(scratch), &why),
        WEIR_RESP_TOO_BIG);
    const char *big = "*1\r\n$6\r\n";
    cr_assert_eq(
        weir__resp_command(big, strlen(big), &lim, args, &argc, scratch, sizeof(scratch), &why),
        WEIR_RESP_TOO_BIG);
    const char *inl = "a b c d\r\n";
    cr_assert_eq(
        weir__resp_command(inl, strlen(inl), &lim, args, &argc, scratch, sizeof(scratch), &why),
        WEIR_RESP_TOO_BIG);
    const char *longer = "GET aaaaaaaaaaaaaaaaaaaa";
    cr_assert_eq(weir__resp_command(longer, strlen(longer), &lim, args, &argc, scratch,
                                    sizeof(scratch), &why),
                 WEIR_RESP_TOO_BIG);
    cr_assert_str_eq(why, "Protocol error: too big inline request");
    /* An inline line of exactly max_inline bytes, ended by LF or CRLF. */
    const char *edge[] = {"GET aaaaaaaaaaaa\n", "GET aaaaaaaaaaaa\r\n"};
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(weir__resp_command(edge[i], strlen(edge[i]), &lim, args, &argc, scratch,
                                        sizeof(scratch), &why),
                     (long)strlen(edge[i]), "%zu", i);
        cr_assert(argc == 2 && args[1].len == 12);
    }
    const char *over = "GET aaaaaaaaaaaaa\r\n";
    cr_assert_eq(
        weir__resp_command(over, strlen(over), &lim, args, &argc, scratch, sizeof(scratch), &why),
        WEIR_RESP_TOO_BIG);
}

Test(resp, inline_vt_and_ff_stay_in_the_argument)
{
    size_t argc;
    const char *why;
    cr_assert_eq(cmd("ECHO a\vb\fc\r\n", &argc, &why), 12);
    cr_assert(argc == 2 && arg_is(1, "a\vb\fc"));
    /* before an argument they are blanks, as isspace() */
    cr_assert_eq(cmd("\vECHO \f\fx\r\n", &argc, &why), 11);
    cr_assert(argc == 2 && arg_is(0, "ECHO") && arg_is(1, "x"));
}

static long reply(const char *s, weir_resp_value *v)
{
    return weir__resp_reply(s, strlen(s), 0, v);
}

Test(resp, replies_resp2)
{
    weir_resp_value v;
    cr_assert_eq(reply("+OK\r\n", &v), 5);
    cr_assert(v.type == WEIR_RESP_SIMPLE && v.n == 2 && memcmp(v.p, "OK", 2) == 0);
    cr_assert_eq(reply("-ERR no\r\n", &v), 9);
    cr_assert_eq(v.type, WEIR_RESP_ERROR);
    cr_assert_eq(reply(":-42\r\n", &v), 6);
    cr_assert(v.type == WEIR_RESP_INTEGER && v.i == -42);
    cr_assert_eq(reply("$14\r\n10.0.0.5:23453\r\n", &v), 21);
    cr_assert(v.type == WEIR_RESP_BULK && v.n == 14);
    cr_assert_eq(reply("$-1\r\n", &v), 5);
    cr_assert_eq(v.type, WEIR_RESP_NIL);
    cr_assert_eq(reply("*2\r\n$1\r\na\r\n*-1\r\n", &v), 16);
    cr_assert(v.type == WEIR_RESP_ARRAY && v.i == 2);
    const char *s = "*2\r\n$1\r\na\r\n:1\r\n";
    for (size_t k = 0; k < strlen(s); k++)
        cr_assert_eq(weir__resp_reply(s, k, 0, &v), WEIR_RESP_MORE, "prefix %zu", k);
}

Test(resp, replies_resp3)
{
    weir_resp_value v;
    cr_assert_eq(reply("_\r\n", &v), 3);
    cr_assert_eq(v.type, WEIR_RESP_NIL);
    cr_assert_eq(reply("#t\r\n", &v), 4);
    cr_assert_eq(reply(",3.14\r\n", &v), 7);
    cr_assert_eq(reply("(12345678901234567890\r\n", &v), 23);
    cr_assert_eq(reply("!3\r\nERR\r\n", &v), 9);
    cr_assert_eq(v.type, WEIR_RESP_ERROR);
    cr_assert_eq(reply("=8\r\ntxt:abcd\r\n", &v), 14);
    cr_assert_eq(v.type, WEIR_RESP_BULK);
    const char *map = "%2\r\n+a\r\n:1\r\n+b\r\n~1\r\n#f\r\n";
    cr_assert_eq(reply(map, &v), (long)strlen(map));
    cr_assert(v.type == WEIR_RESP_ARRAY && v.i == 2);
    const char *attr = "|1\r\n+ttl\r\n:3\r\n$2\r\nhi\r\n";
    cr_assert_eq(reply(attr, &v), (long)strlen(attr));
    cr_assert(v.type == WEIR_RESP_BULK && v.n == 2 && memcmp(v.p, "hi", 2) == 0);
    const char *push = ">2\r\n+message\r\n$1\r\nx\r\n";
    cr_assert_eq(reply(push, &v), (long)strlen(push));
}

Test(resp, malformed_replies)
{
    weir_resp_value v;
    const char *bad[] = {"?\r\n",   ":12a\r\n", "$3\r\nabcd\r\n", "_x\r\n",  "#x\r\n",
                         "!-1\r\n", "%-1\r\n",  "+OK\rX",         "$-2\r\n", ",\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(reply(bad[i], &v), WEIR_RESP_BAD, "%s", bad[i]);
    /* 33 nested arrays: too deep. */
    char deep[200] = "";
    for (int i = 0; i < 33; i++)
        strcat(deep, "*1\r\n");
    strcat(deep, ":1\r\n");
    cr_assert_eq(reply(deep, &v), WEIR_RESP_BAD);
    cr_assert_eq(weir__resp_reply("$10\r\n", 5, 4, &v), WEIR_RESP_BAD); /* over max_bulk */
}

Test(resp, writers_round_trip)
{
    weir_resp_out o = {0};
    weir__resp_array(&o, 6);
    weir__resp_simple(&o, "OK");
    weir__resp_error(&o, "ERR a\r\nb");
    weir__resp_int(&o, -9223372036854775807 - 1);
    weir__resp_bulk(&o, "10.0.0.5:23453", 14);
    weir__resp_nil(&o);
    weir__resp_map(&o, 1);
    weir__resp_bulk(&o, "", 0);
    weir__resp_int(&o, 0);
    cr_assert_not(o.oom);
    const char *want = "*6\r\n+OK\r\n-ERR a  b\r\n:-9223372036854775808\r\n$14\r\n"
                       "10.0.0.5:23453\r\n$-1\r\n*2\r\n$0\r\n\r\n:0\r\n";
    cr_assert_eq(o.len, strlen(want));
    cr_assert_eq(memcmp(o.p, want, o.len), 0);
    weir_resp_value v;
    cr_assert_eq(weir__resp_reply(o.p, o.len, 0, &v), (long)o.len);
    cr_assert(v.type == WEIR_RESP_ARRAY && v.i == 6);
    cr_assert_eq(weir__resp_reply(":9223372036854775808\r\n", 22, 0, &v), WEIR_RESP_BAD);
    cr_assert_eq(weir__resp_reply(":-9223372036854775809\r\n", 23, 0, &v), WEIR_RESP_BAD);
    weir__resp_out_free(&o);
    o.resp3 = true;
    weir__resp_map(&o, 2);
    weir__resp_nil(&o);
    cr_assert_eq(o.len, 7);
    cr_assert_eq(memcmp(o.p, "%2\r\n_\r\n", 7), 0);
    weir__resp_out_free(&o);
}

Test(resp, a_large_bulk_grows_the_buffer)
{
    static char big[300000];
    memset(big, 'x', sizeof(big));
    weir_resp_out o = {0};
    weir__resp_bulk(&o, big, sizeof(big));
    cr_assert_not(o.oom);
    weir_resp_value v;
    cr_assert_eq(weir__resp_reply(o.p, o.len, 0, &v), (long)o.len);
    cr_assert(v.type == WEIR_RESP_BULK && v.n == sizeof(big));
    weir__resp_out_free(&o);
}
