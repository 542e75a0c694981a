// Help for each key, from the docs' tables (docs/config.md, plugins.md,
// cache.md), read at build time: what the forms show under a field. The
// forms themselves come from GET /api/schema; a key the docs do not
// describe just has no help.

export interface Help {
  dflt?: string; // the default as the docs write it
  text: string;
}

// scope: "basic", "servers", ..., or "plugin:CATEGORY".
export type HelpMap = Map<string, Map<string, Help>>;

const SECTION = /^## \[(basic|admin|servers|locations|upstreams|caches|plugins|certificates)\b/;

function cells(row: string): string[] {
  // "| a | b \| c |": split on bars that are not escaped or inside `code`.
  const out: string[] = [];
  let cur = '';
  let code = false;
  for (let i = 1; i < row.length; i++) {
    const c = row[i];
    if (c === '`') code = !code;
    if (c === '\\' && row[i + 1] === '|') {
      cur += '|';
      i++;
      continue;
    }
    if (c === '|' && !code) {
      out.push(cur.trim());
      cur = '';
      continue;
    }
    cur += c;
  }
  return out;
}

function add(m: HelpMap, scope: string, key: string, h: Help) {
  const s = m.get(scope) ?? new Map<string, Help>();
  if (!s.has(key)) s.set(key, h);
  m.set(scope, s);
}

// Reads one doc into m.
export function readHelp(md: string, m: HelpMap = new Map()): HelpMap {
  let scopes: string[] = [];
  let inCode = false;
  let codeScope: string | null = null;
  for (const line of md.split('\n')) {
    if (line.startsWith('```')) {
      inCode = !inCode;
      codeScope = null;
      continue;
    }
    if (inCode) {
      // An example section in a code block: `key = value  # what it is`.
      const h = /^\[(\w+)\./.exec(line);
      if (h) codeScope = h[1];
      const kv = /^([a-z_0-9]+) = .*?#\s*(.+)$/.exec(line);
      if (kv && codeScope) add(m, codeScope, kv[1], { text: kv[2] });
      continue;
    }
    if (line.startsWith('## ')) {
      const s = SECTION.exec(line);
      if (s) scopes = [s[1]];
      else if (/^## (L4|Ring servers)/.test(line)) scopes = ['servers'];
      else if (/^## [a-z_]+(, [a-z_]+)*\s*$/.test(line)) scopes = line.slice(3).trim().split(', ').map((c) => 'plugin:' + c);
      else scopes = [];
      continue;
    }
    if (!line.startsWith('| ')) continue;
    const c = cells(line);
    if (c[0] === 'plugin key') scopes = ['plugin:cache'];
    const keys = [...c[0].matchAll(/`([a-z_0-9]+)`/g)].map((x) => x[1]);
    if (!keys.length || !/^`/.test(c[0]) || c.length < 2) continue;
    const h: Help = c.length >= 3 ? { dflt: c[1], text: c[2] } : { text: c[1] };
    for (const scope of scopes) for (const k of keys) add(m, scope, k, h);
  }
  return m;
}

// The docs' markup as plain text.
export function plain(s: string): string {
  return s.replace(/`([^`]*)`/g, '$1').replace(/\*\*([^*]*)\*\*/g, '$1');
}
