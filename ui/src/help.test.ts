import { describe, expect, it } from 'vitest';
import cacheDoc from '../../docs/cache.md?raw';
import configDoc from '../../docs/config.md?raw';
import pluginsDoc from '../../docs/plugins.md?raw';
import { readHelp } from './help';

describe('help from the docs', () => {
  it('reads tables, their scopes, and example blocks', () => {
    const m = readHelp(`## [basic]

| key | default | meaning |
| --- | --- | --- |
| \`threads\` | CPUs | worker threads |
| \`etcd_cert\`, \`etcd_key\` | none | a \\| b, \`x|y\` |

## mock, ping

| key | |
| --- | --- |
| \`status\` | the answer's status |

## Something else

| \`nope\` | x |

\`\`\`toml
[certificates.site]
acme = "letsencrypt"   # or a directory URL
\`\`\`
`);
    expect(m.get('basic')!.get('threads')).toEqual({ dflt: 'CPUs', text: 'worker threads' });
    expect(m.get('basic')!.get('etcd_key')!.text).toBe('a | b, `x|y`');
    expect(m.get('plugin:mock')!.get('status')!.text).toBe("the answer's status");
    expect(m.get('plugin:ping')!.has('status')).toBe(true);
    expect([...m.keys()].some((k) => [...m.get(k)!.keys()].includes('nope'))).toBe(false);
    expect(m.get('certificates')!.get('acme')!.text).toBe('or a directory URL');
  });
  it('covers the real docs', () => {
    const m = readHelp(configDoc);
    readHelp(pluginsDoc, m);
    readHelp(cacheDoc, m);
    expect(m.get('servers')!.get('addr')).toBeDefined();
    expect(m.get('servers')!.get('sni_routes')).toBeDefined(); // the L4 section
    expect(m.get('upstreams')!.get('connection_timeout')).toBeDefined();
    expect(m.get('locations')!.get('router_key')).toBeDefined();
    expect(m.get('certificates')!.get('key_type')).toBeDefined();
    expect(m.get('plugin:cors')!.get('allow_origins')).toBeDefined();
    expect(m.get('plugin:cache')!.get('storage')).toBeDefined();
    expect(m.get('basic')!.get('log_level')!.dflt).toBe('`"info"`');
  });
});
