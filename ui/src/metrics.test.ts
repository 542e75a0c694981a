import { describe, expect, it } from 'vitest';
import { parse, quantileBy, rateBy, sumBy } from './metrics';

const A = `# HELP weir_requests_total Requests.
# TYPE weir_requests_total counter
weir_requests_total{server="s",location="l",method="GET",status="2xx"} 100
weir_requests_total{server="s",location="l",method="POST",status="5xx"} 4
weir_requests_total{server="s",location="",method="GET",status="4xx"} 1
weir_request_duration_seconds_bucket{location="l",le="0.01"} 50
weir_request_duration_seconds_bucket{location="l",le="0.1"} 90
weir_request_duration_seconds_bucket{location="l",le="+Inf"} 100
process_open_fds 12
`;
const B = A.replace(' 100\n', ' 300\n').replace('le="0.01"} 50', 'le="0.01"} 150')
  .replace('le="0.1"} 90', 'le="0.1"} 290').replace('le="+Inf"} 100', 'le="+Inf"} 300');

describe('parse', () => {
  it('reads names, labels and values, and skips comments', () => {
    const s = parse(A);
    expect(s).toHaveLength(7);
    expect(s[0]).toEqual({ name: 'weir_requests_total', labels: { server: 's', location: 'l', method: 'GET', status: '2xx' }, value: 100 });
    expect(s[5].labels.le).toBe('+Inf');
    expect(s[6]).toEqual({ name: 'process_open_fds', labels: {}, value: 12 });
  });
  it('unescapes label values and survives hostile lines', () => {
    const s = parse('m{a="x\\"y\\\\z\\n",b="{}"} 3\nbroken{a="x} 1\nnovalue\nm{a="1"} notanumber\n');
    expect(s).toEqual([{ name: 'm', labels: { a: 'x"y\\z\n', b: '{}' }, value: 3 }]);
  });
});

describe('rates and quantiles', () => {
  const a = { t: 0, samples: parse(A) };
  const b = { t: 10000, samples: parse(B) };
  it('sums by a label', () => {
    expect(sumBy(a.samples, 'weir_requests_total', (l) => l.server)).toEqual(new Map([['s', 105]]));
  });
  it('gives per-second rates by group', () => {
    const r = rateBy(a, b, 'weir_requests_total', (l) => l.status);
    expect(r.get('2xx')).toBe(20);
    expect(r.get('5xx')).toBe(0);
  });
  it('counts a counter that went down (a restart) from zero', () => {
    const r = rateBy(b, { t: 20000, samples: parse(A) }, 'weir_requests_total', (l) => l.status);
    expect(r.get('2xx')).toBe(10);
  });
  it('interpolates quantiles inside a bucket', () => {
    // 200 new: 100 under 10 ms, 100 more under 100 ms.
    const p50 = quantileBy(a, b, 'weir_request_duration_seconds', 0.5, (l) => l.location).get('l')!;
    expect(p50).toBeCloseTo(0.01, 6);
    const p75 = quantileBy(a, b, 'weir_request_duration_seconds', 0.75, (l) => l.location).get('l')!;
    expect(p75).toBeCloseTo(0.055, 6);
    const p99 = quantileBy(a, b, 'weir_request_duration_seconds', 0.99, (l) => l.location).get('l')!;
    expect(p99).toBeCloseTo(0.0982, 6);
  });
  it('gives the last bound for what is past it', () => {
    const c = { t: 10000, samples: parse(A.replace('le="+Inf"} 100', 'le="+Inf"} 200')) };
    expect(quantileBy(a, c, 'weir_request_duration_seconds', 0.99, (l) => l.location).get('l')).toBe(0.1);
  });
  it('is NaN when nothing was observed', () => {
    expect(quantileBy(a, a, 'weir_request_duration_seconds', 0.5, (l) => l.location).get('l')).toBeNaN();
  });
});
