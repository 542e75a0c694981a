/*
 * default_config.c - the configuration weir runs when given none
 * (`weir --print-default-config` prints it).
 */
#include "app/config/config.h"

const char weir__default_config[] =
    "# weir's embedded default: a proxy on 127.0.0.1:6188 that round-robins\n"
    "# between two echo upstreams served by this same process.\n"
    "\n"
    "[basic]\n"
    "grace_period = \"10s\"\n"
    "\n"
    "[servers.proxy]\n"
    "addr = \"127.0.0.1:6188\"\n"
    "locations = [\"all\"]\n"
    "\n"
    "[locations.all]\n"
    "path = \"/\"\n"
    "upstream = \"echo\"\n"
    "\n"
    "[upstreams.echo]\n"
    "addrs = [\"127.0.0.1:6101\", \"127.0.0.1:6102\"]\n"
    "algo = \"round_robin\"\n"
    "\n"
    "# The two built-in echo upstreams: each answers\n"
    "# \"echo from ADDR: METHOD URI\".\n"
    "[servers.echo_a]\n"
    "addr = \"127.0.0.1:6101\"\n"
    "locations = [\"echo\"]\n"
    "\n"
    "[servers.echo_b]\n"
    "addr = \"127.0.0.1:6102\"\n"
    "locations = [\"echo\"]\n"
    "\n"
    "[locations.echo]\n"
    "echo = true\n";
