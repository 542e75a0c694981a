import { describe, expect, it } from 'vitest';
import { hunks, lineDiff } from './diff';
import { parseError } from './errors';

describe('errors', () => {
  it('reads the line, the key and the section', () => {
    expect(parseError("/etc/weir.toml:12: unknown key 'adrs' in [upstreams.api]; did you mean 'addrs'?")).toEqual({
      line: 12, message: "unknown key 'adrs' in [upstreams.api]; did you mean 'addrs'?", key: 'adrs', section: 'upstreams.api',
    });
    expect(parseError("request:3: 'echo' in [locations.l] must be true or false, not integer").key).toBe('echo');
    expect(parseError("w.toml:8: [locations.l] needs 'upstream' (or echo = true)")).toEqual({
      line: 8, message: "[locations.l] needs 'upstream' (or echo = true)", section: 'locations.l',
    });
    expect(parseError('out of memory')).toEqual({ line: 0, message: 'out of memory' });
    expect(parseError('C:\\x:1: odd').line).toBe(1);
  });
});

describe('diff', () => {
  it('finds what changed between the same head and tail', () => {
    const d = lineDiff('a\nb\nc\nd\n', 'a\nB\nc\nd\ne\n');
    expect(d.map((l) => l.op + l.text)).toEqual([' a', '-b', '+B', ' c', ' d', '+e', ' ']);
  });
  it('handles empty texts and identical ones', () => {
    expect(lineDiff('', 'x').map((l) => l.op + l.text)).toEqual(['-', '+x']);
    expect(lineDiff('same', 'same').every((l) => l.op === ' ')).toBe(true);
  });
  it('keeps context around changes only', () => {
    const a = Array.from({ length: 20 }, (_, i) => 'l' + i).join('\n');
    const b = a.replace('l10', 'L10');
    const h = hunks(lineDiff(a, b), 2);
    expect(h.map((l) => (l ? l.op + l.text : '…'))).toEqual(['…', ' l8', ' l9', '-l10', '+L10', ' l11', ' l12', '…']);
  });
});

import { fromField, toField } from './form';

describe('form fields', () => {
  it('turn values into text and back', () => {
    const cases: [any, unknown][] = [
      [{ name: 'a', type: 'strings' }, ['x', 'y z']],
      [{ name: 'a', type: 'integers' }, [200, 204]],
      [{ name: 'a', type: 'integer' }, 5],
      [{ name: 'a', type: 'boolean' }, false],
      [{ name: 'a', type: 'table' }, { 'a.test': 'u' }],
      [{ name: 'a', type: 'array' }, [['a', 'b']]],
      [{ name: 'a', type: 'duration' }, '1m30s'],
      [{ name: 'a', type: 'size' }, 1048576],
      [{ name: 'a', type: 'size' }, '64KB'],
      [{ name: 'a', type: 'string' }, ' spaces kept '],
    ];
    for (const [k, v] of cases) expect(fromField(k, toField(k, v))).toEqual(v);
  });
  it('leave empty fields out and refuse what is not of the type', () => {
    expect(fromField({ name: 'a', type: 'integer' }, '  ')).toBeUndefined();
    expect(fromField({ name: 'a', type: 'strings' }, '\n\n')).toBeUndefined();
    expect(fromField({ name: 'a', type: 'integer' }, '1.5')).toBeInstanceOf(Error);
    expect(fromField({ name: 'a', type: 'boolean' }, 'yes')).toBeInstanceOf(Error);
    expect(fromField({ name: 'a', type: 'table' }, '{ a = ')).toBeInstanceOf(Error);
    expect(fromField({ name: 'a', type: 'integers' }, '200, x')).toBeInstanceOf(Error);
  });
  it('keep a single string of a strings key as written', () => {
    expect(toField({ name: 'a', type: 'strings' }, '127.0.0.1:80')).toBe('127.0.0.1:80');
  });
});
