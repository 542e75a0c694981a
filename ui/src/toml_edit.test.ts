import { describe, expect, it } from 'vitest';
import { parseValue, renderValue } from './toml_edit';

describe('TOML values', () => {
  it('reads a typed value', () => {
    expect(parseValue('{ "a.test" = "u" }')).toEqual({ 'a.test': 'u' });
    expect(parseValue('[["a", "b"]]')).toEqual([['a', 'b']]);
    expect(() => parseValue('[1,')).toThrow();
    expect(() => parseValue('1\n[admin]\ntoken = "x"')).toThrow();
  });
  it('writes values TOML reads back as they were', () => {
    const hostile = 'a"b\\c\nd\t\u0001\u00e9"]\n[admin]';
    for (const v of [hostile, { 'odd key': { 'a.b': [1, 2] }, x: true }, [['a', 'b']], -5])
      expect(parseValue(renderValue(v))).toEqual(v);
  });
});
