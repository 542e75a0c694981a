// A line diff of two texts (the config before and after an edit): the
// longest common subsequence of lines, after the common head and tail.
export interface DiffLine {
  op: ' ' | '+' | '-';
  text: string;
}

export function lineDiff(a: string, b: string): DiffLine[] {
  const x = a.split('\n');
  const y = b.split('\n');
  let head = 0;
  while (head < x.length && head < y.length && x[head] === y[head]) head++;
  let tail = 0;
  while (tail < x.length - head && tail < y.length - head && x[x.length - 1 - tail] === y[y.length - 1 - tail]) tail++;
  const xs = x.slice(head, x.length - tail);
  const ys = y.slice(head, y.length - tail);
  const n = xs.length;
  const m = ys.length;
  const out: DiffLine[] = x.slice(0, head).map((text) => ({ op: ' ', text }));
  if (n * m > 4_000_000) {
    // Too large to compare line by line: all out, all in.
    xs.forEach((text) => out.push({ op: '-', text }));
    ys.forEach((text) => out.push({ op: '+', text }));
  } else {
    const L = new Uint32Array((n + 1) * (m + 1));
    for (let i = n - 1; i >= 0; i--)
      for (let j = m - 1; j >= 0; j--)
        L[i * (m + 1) + j] = xs[i] === ys[j] ? L[(i + 1) * (m + 1) + j + 1] + 1 : Math.max(L[(i + 1) * (m + 1) + j], L[i * (m + 1) + j + 1]);
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && xs[i] === ys[j]) {
        out.push({ op: ' ', text: xs[i] });
        i++;
        j++;
      } else if (i < n && (j >= m || L[(i + 1) * (m + 1) + j] >= L[i * (m + 1) + j + 1])) {
        out.push({ op: '-', text: xs[i++] }); // what goes before what comes
      } else {
        out.push({ op: '+', text: ys[j++] });
      }
    }
  }
  x.slice(x.length - tail).forEach((text) => out.push({ op: ' ', text }));
  return out;
}

// Only the changed lines with n lines of context around them; "…" rows
// stand for what is left out.
export function hunks(d: DiffLine[], n = 3): (DiffLine | null)[] {
  const keep = d.map(() => false);
  d.forEach((l, i) => {
    if (l.op !== ' ') for (let k = Math.max(0, i - n); k <= Math.min(d.length - 1, i + n); k++) keep[k] = true;
  });
  const out: (DiffLine | null)[] = [];
  d.forEach((l, i) => {
    if (keep[i]) out.push(l);
    else if (out[out.length - 1] !== null) out.push(null);
  });
  return out;
}
