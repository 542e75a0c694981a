import { describe, expect, it } from 'vitest';
import { headerParts, parseValue, renderSection, replaceSection, sections, values } from './toml_edit';

const T = `# weir
[basic]
threads = 2

[servers.s]   # the site
addr = "127.0.0.1:80"
locations = ["l"]
[servers.s.sni_routes]
"a.test" = "u"

# the default location
[locations.l]
echo = true
[upstreams."my api"]
addrs = ["127.0.0.1:1"]
`;

describe('sections', () => {
  it('finds each section with its sub-tables and the comments before the next', () => {
    const s = sections(T);
    expect(s.map((x) => [x.name, x.kind, x.id, x.start, x.end])).toEqual([
      ['basic', 'basic', '', 1, 3],
      ['servers.s', 'servers', 's', 4, 9],
      ['locations.l', 'locations', 'l', 11, 13],
      ['upstreams."my api"', 'upstreams', 'my api', 13, 15],
    ]);
  });
  it('reads quoted and odd headers', () => {
    expect(headerParts('[a."b.c".d]')).toEqual(['a', 'b.c', 'd']);
    expect(headerParts("[ a . 'x y' ]")).toEqual(['a', 'x y']);
    expect(headerParts('[[servers.s.routes]]')).toEqual(['servers', 's', 'routes']);
    expect(headerParts('[a b]')).toBeNull();
    expect(headerParts('key = 1')).toBeNull();
    expect(headerParts('[a."open]')).toBeNull();
  });
});

describe('edits', () => {
  it('replaces a section and keeps everything else byte for byte', () => {
    const block = renderSection('servers', 's', { addr: '127.0.0.1:81', locations: ['l'], h2c: true, nothing: undefined });
    const out = replaceSection(T, 'servers.s', block);
    expect(out).toBe(T.replace('[servers.s]   # the site\naddr = "127.0.0.1:80"\nlocations = ["l"]\n[servers.s.sni_routes]\n"a.test" = "u"\n',
      '[servers.s]\naddr = "127.0.0.1:81"\nlocations = ["l"]\nh2c = true\n'));
    expect(values(out).servers.s).toEqual({ addr: '127.0.0.1:81', locations: ['l'], h2c: true });
  });
  it('keeps the last newline (or its absence) when the last section changes', () => {
    const block = renderSection('upstreams', 'my api', { addrs: ['127.0.0.1:2'] });
    expect(replaceSection(T, 'upstreams."my api"', block).endsWith('[upstreams."my api"]\naddrs = ["127.0.0.1:2"]\n')).toBe(true);
    const bare = T.replace(/\n$/, '');
    expect(replaceSection(bare, 'upstreams."my api"', block).endsWith('addrs = ["127.0.0.1:2"]')).toBe(true);
  });
  it('removes a section and adds a new one at the end', () => {
    const out = replaceSection(T, 'locations.l', null);
    expect(sections(out).map((x) => x.name)).toEqual(['basic', 'servers.s', 'upstreams."my api"']);
    expect(out).toContain('# the default location\n[upstreams."my api"]');
    const added = replaceSection(T, 'caches.c', renderSection('caches', 'c', { memory: '8MB' }));
    expect(added.endsWith('addrs = ["127.0.0.1:1"]\n\n[caches.c]\nmemory = "8MB"\n')).toBe(true);
    expect(values(added).caches.c.memory).toBe('8MB');
  });
  it('writes strings that TOML reads back as they were', () => {
    const hostile = 'a"b\\c\nd\t\u0001é"]\n[admin]';
    const out = replaceSection('', 'locations.x', renderSection('locations', 'x y', { path: hostile, 'odd key': { 'a.b': [1, 2] } }));
    const v = values(out).locations['x y'];
    expect(v.path).toBe(hostile);
    expect(v['odd key']).toEqual({ 'a.b': [1, 2] });
    expect(sections(out)).toHaveLength(1);
  });
  it('reads a typed value', () => {
    expect(parseValue('{ "a.test" = "u" }')).toEqual({ 'a.test': 'u' });
    expect(parseValue('[["a", "b"]]')).toEqual([['a', 'b']]);
    expect(() => parseValue('[1,')).toThrow();
  });
});
