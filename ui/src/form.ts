// Between a section's TOML values and a form's fields (strings), by the
// type GET /api/schema gives each key.
import { parseValue, renderValue } from './toml_edit';

export interface Key {
  name: string;
  type: string;
  choices?: string[];
}

// The field's text for a value of the file (undefined: not set).
export function toField(k: Key, v: unknown): string {
  if (v === undefined || v === null) return '';
  switch (k.type) {
    case 'strings':
      return Array.isArray(v) ? v.join('\n') : String(v);
    case 'integers':
      return Array.isArray(v) ? v.join(', ') : String(v);
    case 'table':
    case 'array':
      return renderValue(v);
    case 'boolean':
      return v ? 'true' : 'false';
    default:
      return typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint' ? String(v) : renderValue(v);
  }
}

// The value a field's text stands for (undefined: leave the key out), or
// an Error saying why the text is not one.
export function fromField(k: Key, text: string): unknown | Error {
  const t = text.trim();
  if (t === '') return undefined;
  switch (k.type) {
    case 'strings': {
      const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
      return lines.length ? lines : undefined;
    }
    case 'integer':
      return /^-?\d+$/.test(t) ? Number(t) : new Error('a whole number');
    case 'integers': {
      const parts = t.split(/[\s,]+/).filter((p) => p !== '');
      return parts.every((p) => /^-?\d+$/.test(p)) ? parts.map(Number) : new Error('whole numbers, separated by commas');
    }
    case 'boolean':
      return t === 'true' ? true : t === 'false' ? false : new Error('true or false');
    case 'size':
      return /^\d+$/.test(t) ? Number(t) : t;
    case 'table':
    case 'array':
      try {
        return parseValue(t);
      } catch (e) {
        return new Error('a TOML value: ' + (e as Error).message.split('\n')[0]);
      }
    default:
      return text;
  }
}

export function placeholder(k: Key): string {
  switch (k.type) {
    case 'duration':
      return 'e.g. 10s, 500ms, 1m30s';
    case 'size':
      return 'e.g. 64KB, 10MB, 1048576';
    case 'strings':
      return 'one per line';
    case 'integers':
      return 'e.g. 200, 204';
    case 'table':
      return 'a TOML table, e.g. { "a.example" = "a" }';
    case 'array':
      return 'a TOML array, e.g. [["from", "to"]]';
    default:
      return '';
  }
}
