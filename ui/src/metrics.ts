// The Prometheus text format of weir's GET /metrics, and what the dashboard
// derives from two scrapes of it: rates and latency quantiles.

export type Labels = Record<string, string>;
export interface Sample {
  name: string;
  labels: Labels;
  value: number;
}

// One label set's text: name="value" pairs with \\, \" and \n escapes.
function parseLabels(s: string): Labels | null {
  const out: Labels = {};
  let i = 0;
  while (i < s.length) {
    while (s[i] === ' ' || s[i] === ',') i++;
    if (i >= s.length) break;
    const eq = s.indexOf('=', i);
    if (eq < 0 || s[eq + 1] !== '"') return null;
    const key = s.slice(i, eq).trim();
    let v = '';
    let k = eq + 2;
    for (; k < s.length && s[k] !== '"'; k++) {
      if (s[k] === '\\' && k + 1 < s.length) {
        k++;
        v += s[k] === 'n' ? '\n' : s[k];
      } else {
        v += s[k];
      }
    }
    if (k >= s.length) return null;
    out[key] = v;
    i = k + 1;
  }
  return out;
}

function parseValue(s: string): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  return Number(s);
}

// Every sample of the text; comment lines and malformed lines are skipped.
export function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line[0] === '#') continue;
    let name: string;
    let labels: Labels = {};
    let rest: string;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    if (brace >= 0 && (space < 0 || brace < space)) {
      const close = line.lastIndexOf('}');
      if (close < brace) continue;
      name = line.slice(0, brace);
      const l = parseLabels(line.slice(brace + 1, close));
      if (!l) continue;
      labels = l;
      rest = line.slice(close + 1).trim();
    } else {
      if (space < 0) continue;
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const value = parseValue(rest.split(/\s+/)[0]);
    if (!Number.isNaN(value)) out.push({ name, labels, value });
  }
  return out;
}

// A scrape: its samples and when it was taken (ms).
export interface Scrape {
  t: number;
  samples: Sample[];
}

export type GroupBy = (l: Labels) => string | null;

// The sum of name's samples by group (null from by leaves a sample out).
export function sumBy(s: Sample[], name: string, by: GroupBy): Map<string, number> {
  const out = new Map<string, number>();
  for (const x of s) {
    if (x.name !== name) continue;
    const g = by(x.labels);
    if (g === null) continue;
    out.set(g, (out.get(g) ?? 0) + x.value);
  }
  return out;
}

// Per second between two scrapes, by group. A counter that went down (a
// restart) counts from zero.
export function rateBy(a: Scrape, b: Scrape, name: string, by: GroupBy): Map<string, number> {
  const dt = (b.t - a.t) / 1000;
  const before = sumBy(a.samples, name, by);
  const after = sumBy(b.samples, name, by);
  const out = new Map<string, number>();
  if (dt <= 0) return out;
  for (const [g, v] of after) {
    const p = before.get(g) ?? 0;
    out.set(g, (v >= p ? v - p : v) / dt);
  }
  return out;
}

// The q-quantile (0..1) of a histogram's observations between two scrapes,
// by group, interpolated inside the bucket as Prometheus does; NaN when
// nothing was observed.
export function quantileBy(a: Scrape, b: Scrape, base: string, q: number, by: GroupBy): Map<string, number> {
  const buckets = (s: Sample[]) => {
    const m = new Map<string, Map<number, number>>();
    for (const x of s) {
      if (x.name !== base + '_bucket' || x.labels.le === undefined) continue;
      const g = by(x.labels);
      if (g === null) continue;
      const le = parseValue(x.labels.le);
      const bm = m.get(g) ?? new Map<number, number>();
      bm.set(le, (bm.get(le) ?? 0) + x.value);
      m.set(g, bm);
    }
    return m;
  };
  const before = buckets(a.samples);
  const out = new Map<string, number>();
  for (const [g, bm] of buckets(b.samples)) {
    const pm = before.get(g);
    const les = [...bm.keys()].sort((x, y) => x - y);
    const counts = les.map((le) => {
      const v = bm.get(le)! - (pm?.get(le) ?? 0);
      return v < 0 ? bm.get(le)! : v;
    });
    const total = counts.length ? counts[counts.length - 1] : 0;
    if (!total) {
      out.set(g, NaN);
      continue;
    }
    const rank = q * total;
    let v = NaN;
    for (let i = 0; i < les.length; i++) {
      if (counts[i] >= rank) {
        const lo = i ? les[i - 1] : 0;
        const hi = les[i];
        const below = i ? counts[i - 1] : 0;
        if (hi === Infinity) {
          v = lo; // past the last bound: the last bound, as Prometheus does
        } else {
          const inBucket = counts[i] - below;
          v = inBucket ? lo + ((hi - lo) * (rank - below)) / inBucket : hi;
        }
        break;
      }
    }
    out.set(g, v);
  }
  return out;
}

// The status class of a weir_requests_total status label ("2xx", "none").
export function statusClass(l: Labels): string {
  return l.status ?? 'none';
}
