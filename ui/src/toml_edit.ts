// TOML values for the config forms' table and array fields, which are
// typed as TOML ("{ "a.example" = "a" }", "[["from", "to"]]").
import { parse } from 'smol-toml';

const BARE = /^[A-Za-z0-9_-]+$/;

function quoteKey(k: string): string {
  return BARE.test(k) ? k : JSON.stringify(k);
}

// v written as a TOML value (strings as basic strings; JSON's escapes are
// TOML's).
export function renderValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Array.isArray(v)) return '[' + v.map(renderValue).join(', ') + ']';
  if (v && typeof v === 'object')
    return '{ ' + Object.entries(v as Record<string, unknown>).map(([k, x]) => quoteKey(k) + ' = ' + renderValue(x)).join(', ') + ' }';
  throw new Error('cannot write ' + String(v) + ' in TOML');
}

// One value typed as TOML, and nothing after it.
export function parseValue(t: string): unknown {
  const doc = parse('v = ' + t) as Record<string, unknown>;
  if (Object.keys(doc).length !== 1) throw new Error('one value only');
  return doc.v;
}
