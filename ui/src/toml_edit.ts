// Edits of a weir TOML file by section, for the config forms: find a
// section's lines, render a section from values, and put it in the text
// in place of the old one. The rest of the file stays byte for byte
// (comments included); a rewritten section loses the comments inside it.
import { parse } from 'smol-toml';

export interface Section {
  name: string; // "upstreams.api", "basic"
  kind: string; // "upstreams", "basic"
  id: string; // "api", "" for basic and admin
  start: number; // line of its header
  end: number; // line after its last (sub-tables included)
}

const BARE = /^[A-Za-z0-9_-]+$/;

export function quoteKey(k: string): string {
  return BARE.test(k) ? k : JSON.stringify(k);
}

// The dotted key of a header line's [a.b."c d"] (or [[...]]), as parts.
export function headerParts(line: string): string[] | null {
  const t = line.trim();
  const m = /^\[\[?(.*?)\]\]?\s*(#.*)?$/.exec(t);
  if (!m) return null;
  const parts: string[] = [];
  const s = m[1];
  let i = 0;
  while (i < s.length) {
    while (s[i] === ' ' || s[i] === '\t') i++;
    if (s[i] === '"' || s[i] === "'") {
      const q = s[i];
      let k = i + 1;
      let v = '';
      for (; k < s.length && s[k] !== q; k++) {
        if (q === '"' && s[k] === '\\' && k + 1 < s.length) {
          k++;
          v += s[k] === 'n' ? '\n' : s[k] === 't' ? '\t' : s[k];
        } else v += s[k];
      }
      if (k >= s.length) return null;
      parts.push(v);
      i = k + 1;
    } else {
      let k = i;
      while (k < s.length && s[k] !== '.' && s[k] !== ' ' && s[k] !== '\t') k++;
      const word = s.slice(i, k);
      if (!BARE.test(word)) return null;
      parts.push(word);
      i = k;
    }
    while (s[i] === ' ' || s[i] === '\t') i++;
    if (i < s.length && s[i] !== '.') return null;
    i++;
  }
  return parts.length ? parts : null;
}

const SINGLE = new Set(['basic', 'admin']);

// Where a header line's section is: basic/admin are one part; the named
// kinds two (servers.s); more parts are a sub-table of the two-part one.
function sectionOf(parts: string[]): string[] {
  return SINGLE.has(parts[0]) ? parts.slice(0, 1) : parts.slice(0, 2);
}

// The sections of text, in order. Lines inside a multi-line string that
// look like headers are not told apart (weir's files do not have them).
export function sections(text: string): Section[] {
  const lines = text.split('\n');
  // The "" after a last newline is no line of the last section.
  const n = text.endsWith('\n') ? lines.length - 1 : lines.length;
  const out: Section[] = [];
  let cur: Section | null = null;
  lines.forEach((line, i) => {
    const parts = headerParts(line);
    if (!parts) return;
    const sec = sectionOf(parts);
    const name = sec.map(quoteKey).join('.');
    if (cur && cur.name === name) return; // a sub-table of the same section
    if (cur) cur.end = i;
    cur = { name, kind: sec[0], id: sec[1] ?? '', start: i, end: n };
    out.push(cur);
  });
  // Blank and comment lines just before the next header belong to it.
  for (let k = 0; k + 1 < out.length; k++) {
    let e = out[k].end;
    while (e - 1 > out[k].start && /^\s*(#.*)?$/.test(lines[e - 1])) e--;
    out[k].end = e;
  }
  return out;
}

function value(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Array.isArray(v)) return '[' + v.map(value).join(', ') + ']';
  if (v && typeof v === 'object')
    return '{ ' + Object.entries(v as Record<string, unknown>).map(([k, x]) => quoteKey(k) + ' = ' + value(x)).join(', ') + ' }';
  throw new Error('cannot write ' + String(v) + ' in TOML');
}

export function renderValue(v: unknown): string {
  return value(v);
}

// [kind.id] with its keys, in the order given; undefined values left out.
export function renderSection(kind: string, id: string, values: Record<string, unknown>): string {
  const head = '[' + (id ? quoteKey(kind) + '.' + quoteKey(id) : quoteKey(kind)) + ']';
  const body = Object.entries(values)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => quoteKey(k) + ' = ' + value(v));
  return [head, ...body].join('\n') + '\n';
}

// text with section name replaced by block (a rendered section), removed
// (block null), or added at the end when it is not there.
export function replaceSection(text: string, name: string, block: string | null): string {
  const lines = text.split('\n');
  const s = sections(text).find((x) => x.name === name);
  const add = block === null ? [] : block.replace(/\n$/, '').split('\n');
  if (!s) {
    if (block === null) return text;
    const base = text.replace(/\n*$/, '');
    return (base ? base + '\n\n' : '') + add.join('\n') + '\n';
  }
  lines.splice(s.start, s.end - s.start, ...add);
  return lines.join('\n');
}

// The values of every section ({kind: {id: {...}}}, basic and admin flat).
export function values(text: string): Record<string, any> {
  return parse(text) as Record<string, any>;
}

// One value typed as TOML ("[1, 2]", "{ a = 1 }", "\"x\"") for a form's
// table or array field.
export function parseValue(t: string): unknown {
  return (parse('v = ' + t) as Record<string, unknown>).v;
}
