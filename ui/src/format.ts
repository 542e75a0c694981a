export function rate(v: number | undefined): string {
  if (v === undefined || Number.isNaN(v)) return '–';
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

export function ms(seconds: number | undefined): string {
  if (seconds === undefined || Number.isNaN(seconds)) return '–';
  const v = seconds * 1000;
  return v >= 100 ? v.toFixed(0) + ' ms' : v.toFixed(1) + ' ms';
}

export function ago(unix: number): string {
  const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
  if (s < 90) return s + ' s ago';
  if (s < 5400) return Math.round(s / 60) + ' min ago';
  if (s < 129600) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' days ago';
}

export function until(seconds: number): string {
  if (seconds < 0) return 'expired';
  const d = seconds / 86400;
  return d >= 2 ? Math.floor(d) + ' days' : Math.round(seconds / 3600) + ' h';
}

export function when(unix: number): string {
  return new Date(unix * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}
