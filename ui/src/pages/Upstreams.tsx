import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';

// Membership without a reload: add, remove, drain and re-weight backends
// (PUT/POST/DELETE/PATCH /api/upstreams/...).
export function Upstreams() {
  const [ups, setUps] = useState<any[]>([]);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const load = async () => setUps((await api<{ upstreams: any[] }>('GET', '/api/upstreams')).upstreams);
  useEffect(() => {
    load().catch((e) => setMsg({ ok: false, text: e.message }));
    const t = setInterval(() => load().catch(() => {}), 3000);
    return () => clearInterval(t);
  }, []);
  const act = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
      setMsg({ ok: true, text: what });
      await load();
    } catch (e) {
      setMsg({ ok: false, text: what + ': ' + (e as Error).message });
    }
  };
  const path = (u: string, a?: string) => '/api/upstreams/' + encodeURIComponent(u) + '/backends' + (a ? '/' + encodeURIComponent(a) : '');
  return (
    <div>
      {msg && <p class={msg.ok ? 'notice' : 'error'} data-testid="upstream-message">{msg.text}</p>}
      {ups.map((u) => (
        <section class="upstream" data-upstream={u.name}>
          <h2>{u.name} <small>{u.algo}{u.discovery ? ', ' + u.discovery.kind + ' discovery' : ''}</small></h2>
          <div class="scroll">
            <table>
              <thead><tr><th>backend</th><th>state</th><th>weight</th><th>in flight</th><th>requests</th><th>failures</th><th /></tr></thead>
              <tbody>
                {u.backends.map((b: any) => (
                  <tr data-backend={b.addr}>
                    <td><code>{b.addr}</code></td>
                    <td class={b.healthy && !b.draining ? 'ok' : 'bad'}>{b.draining ? 'draining' : b.healthy ? 'up' : 'down'} {b.breaker !== 'closed' && '(breaker ' + b.breaker + ')'}</td>
                    <td>
                      <form class="inline" onSubmit={(e) => {
                        e.preventDefault();
                        const w = Number((e.currentTarget.elements.namedItem('weight') as HTMLInputElement).value);
                        act('weight of ' + b.addr + ' set to ' + w, () => api('PATCH', path(u.name, b.addr), { weight: w }));
                      }}>
                        <input name="weight" type="number" min="1" max="10000" value={b.weight} aria-label={'weight of ' + b.addr} />
                        <button type="submit">Set</button>
                      </form>
                    </td>
                    <td class="num">{b.in_flight}</td><td class="num">{b.requests}</td><td class="num">{b.failures}</td>
                    <td class="actions">
                      <button onClick={() => act((b.draining ? 'undrained ' : 'drained ') + b.addr, () => api('PATCH', path(u.name, b.addr), { drain: !b.draining }))}>
                        {b.draining ? 'Undrain' : 'Drain'}
                      </button>
                      <button class="danger" onClick={() => confirm('Remove ' + b.addr + ' from ' + u.name + '?') && act('removed ' + b.addr, () => api('DELETE', path(u.name, b.addr)))}>
                        Remove
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {!u.discovery && (
            <form class="inline" onSubmit={(e) => {
              e.preventDefault();
              const f = e.currentTarget;
              const addr = (f.elements.namedItem('addr') as HTMLInputElement).value.trim();
              const weight = Number((f.elements.namedItem('weight') as HTMLInputElement).value || 1);
              act('added ' + addr, () => api('POST', path(u.name), { addr, weight })).then(() => f.reset());
            }}>
              <input name="addr" placeholder="ip:port" required aria-label={'new backend of ' + u.name} />
              <input name="weight" type="number" min="1" max="10000" placeholder="weight" />
              <button type="submit">Add backend</button>
            </form>
          )}
        </section>
      ))}
    </div>
  );
}
