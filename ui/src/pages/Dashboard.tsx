import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, metricsText } from '../api';
import { Chart } from '../Chart';
import { ago, ms, rate, until, when } from '../format';
import { parse, quantileBy, rateBy, Scrape, sumBy } from '../metrics';

const KEEP = 150; // scrapes: five minutes at one every two seconds
const EVERY_MS = 2000;
const CLASSES = ['2xx', '3xx', '4xx', '5xx'];
const COLORS = ['#2e7d32', '#1565c0', '#ef6c00', '#c62828'];

type Status = { version: string; revision: number; source: string; config: string; started: number; last_reload: null | { time: number; ok: boolean; error: string | null } };

export function Dashboard() {
  const [scrapes, setScrapes] = useState<Scrape[]>([]);
  const [status, setStatus] = useState<Status | null>(null);
  const [ups, setUps] = useState<any[]>([]);
  const [fleet, setFleet] = useState<any | null>(null);
  const [error, setError] = useState('');
  const tick = useRef(0);
  useEffect(() => {
    let stop = false;
    const poll = async () => {
      try {
        const text = await metricsText();
        if (stop) return;
        const s = { t: Date.now(), samples: parse(text) };
        setScrapes((prev) => [...prev.slice(-(KEEP - 1)), s]);
        if (tick.current++ % 5 === 0) {
          setStatus(await api<Status>('GET', '/api/status'));
          try {
            setFleet(await api('GET', '/api/fleet'));
          } catch (e) {
            if (!(e instanceof ApiError && e.status === 404)) throw e;
            setFleet(null);
          }
        }
        setUps((await api<{ upstreams: any[] }>('GET', '/api/upstreams')).upstreams);
        setError('');
      } catch (e) {
        if (!stop) setError(String((e as Error).message));
      }
    };
    poll();
    const t = setInterval(poll, EVERY_MS);
    return () => {
      stop = true;
      clearInterval(t);
    };
  }, []);

  const last = scrapes[scrapes.length - 1];
  // Rates over the last half minute (or what there is).
  const ref = scrapes[Math.max(0, scrapes.length - 16)];
  const pairs = scrapes.slice(1).map((b, i) => [scrapes[i], b] as const);
  const x = pairs.map(([, b]) => b.t / 1000);
  const all = () => 'all';
  const classSeries = CLASSES.map((c) => pairs.map(([a, b]) => rateBy(a, b, 'weir_requests_total', (l) => (l.status === c ? c : null)).get(c) ?? 0));
  const p = (q: number) => pairs.map(([a, b]) => {
    const v = quantileBy(a, b, 'weir_request_duration_seconds', q, all).get('all');
    return v === undefined || Number.isNaN(v) ? null : v * 1000;
  });
  const key = (l: Record<string, string>) => l.server + '\u0000' + (l.location ?? '');
  const byLoc = last && ref && last !== ref ? rateBy(ref, last, 'weir_requests_total', key) : new Map<string, number>();
  const locs = [...byLoc.keys()].sort();
  const classRate = (k: string, c: string) => (last && ref && last !== ref ? rateBy(ref, last, 'weir_requests_total', (l) => (key(l) === k && l.status === c ? c : null)).get(c) : undefined);
  const latency = (loc: string, q: number) => (last && ref && last !== ref ? quantileBy(ref, last, 'weir_request_duration_seconds', q, (l) => (l.location === loc ? loc : null)).get(loc) : undefined);
  const certs = last ? sumBy(last.samples, 'weir_certificate_expiry_seconds', (l) => l.name) : new Map();

  return (
    <div>
      {error && <p class="error">{error}</p>}
      <section class="cards">
        <div class="card">
          <h3>Requests/s</h3>
          <p class="big" data-testid="total-rate">{rate(classSeries.reduce((s, v) => s + (v[v.length - 1] ?? 0), 0))}</p>
        </div>
        <div class="card">
          <h3>Configuration</h3>
          {status ? (
            <p>
              revision <b data-testid="revision">{status.revision}</b> from {status.source} <code>{status.config}</code>
              <br />
              {status.last_reload ? (
                <span class={status.last_reload.ok ? 'ok' : 'bad'} data-testid="last-reload">
                  last reload {status.last_reload.ok ? 'ok' : 'failed'}, {ago(status.last_reload.time)}
                  {status.last_reload.error && <><br />{status.last_reload.error}</>}
                </span>
              ) : (
                <span>no reload since the start ({when(status.started)})</span>
              )}
              <br />
              weir {status.version}
            </p>
          ) : (
            <p>…</p>
          )}
        </div>
      </section>
      <section class="charts">
        <Chart title="Requests/s by status" lines={CLASSES.map((c, i) => ({ label: c, color: COLORS[i] }))} data={[x, ...classSeries]} />
        <Chart title="Latency (ms)" lines={[{ label: 'p50', color: '#1565c0' }, { label: 'p99', color: '#c62828' }]} data={[x, p(0.5), p(0.99)]} />
      </section>
      <h2>Servers and locations</h2>
      <div class="scroll">
        <table data-testid="locations">
          <thead>
            <tr><th>server</th><th>location</th><th>req/s</th>{CLASSES.map((c) => <th>{c}/s</th>)}<th>p50</th><th>p99</th></tr>
          </thead>
          <tbody>
            {locs.map((k) => {
              const [srv, loc] = k.split('\u0000');
              return (
                <tr data-location={loc}>
                  <td>{srv}</td><td>{loc || <i>none</i>}</td><td class="num">{rate(byLoc.get(k))}</td>
                  {CLASSES.map((c) => <td class="num">{rate(classRate(k, c))}</td>)}
                  <td class="num">{ms(latency(loc, 0.5))}</td><td class="num">{ms(latency(loc, 0.99))}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      <h2>Upstreams</h2>
      <div class="scroll">
        <table data-testid="backends">
          <thead><tr><th>upstream</th><th>backend</th><th>state</th><th>weight</th><th>in flight</th><th>requests</th><th>failures</th></tr></thead>
          <tbody>
            {ups.flatMap((u) => u.backends.map((b: any) => (
              <tr>
                <td>{u.name}</td><td><code>{b.addr}</code></td>
                <td class={b.healthy && b.breaker === 'closed' && !b.draining ? 'ok' : 'bad'}>{b.draining ? 'draining' : b.healthy ? (b.breaker === 'closed' ? 'up' : 'breaker ' + b.breaker) : 'down'}</td>
                <td class="num">{b.weight}</td><td class="num">{b.in_flight}</td><td class="num">{b.requests}</td><td class="num">{b.failures}</td>
              </tr>
            )))}
          </tbody>
        </table>
      </div>
      {certs.size > 0 && (
        <>
          <h2>Certificates</h2>
          <table data-testid="certificates">
            <thead><tr><th>name</th><th>expires in</th></tr></thead>
            <tbody>{[...certs].map(([n, s]) => <tr><td>{n}</td><td class={s < 14 * 86400 ? 'bad' : 'ok'}>{until(s)}</td></tr>)}</tbody>
          </table>
        </>
      )}
      {fleet && (
        <>
          <h2>Fleet</h2>
          <p>etcd revision {fleet.config?.revision}, {fleet.config?.connected ? 'connected' : 'not connected: ' + fleet.config?.error}</p>
          <table data-testid="fleet">
            <thead><tr><th>instance</th><th>host</th><th>version</th><th>revision</th><th>listening</th></tr></thead>
            <tbody>{(fleet.instances ?? []).map((i: any) => <tr><td>{i.id}</td><td>{i.hostname}</td><td>{i.version}</td><td>{i.revision}</td><td>{(i.listen ?? []).join(', ')}</td></tr>)}</tbody>
          </table>
        </>
      )}
    </div>
  );
}
