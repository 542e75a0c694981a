import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import { hunks, lineDiff } from '../diff';
import { when } from '../format';

export function History() {
  const [h, setH] = useState<any>(null);
  const [current, setCurrent] = useState<{ text: string; sha256: string } | null>(null);
  const [shown, setShown] = useState<any>(null);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const load = async () => {
    const list = await api('GET', '/api/config/history');
    setH(list);
    if (String(list.dir).startsWith('etcd:')) {
      // etcd's: what runs is the newest entry (each change records it).
      const top = list.entries.find((e: any) => !e.damaged);
      setCurrent(top ? { text: (await api('GET', '/api/config/history/' + encodeURIComponent(top.id))).text, sha256: top.sha256 } : null);
    } else {
      setCurrent(await api('GET', '/api/config/file'));
    }
  };
  useEffect(() => {
    load().catch((e) => setMsg({ ok: false, text: e.message }));
  }, []);
  const show = async (id: number) => {
    try {
      setShown(await api('GET', '/api/config/history/' + encodeURIComponent(id)));
    } catch (e) {
      setMsg({ ok: false, text: (e as Error).message });
    }
  };
  const rollback = async (id: number) => {
    if (!current || !confirm('Roll back to entry ' + id + '? It is applied and reloaded.')) return;
    try {
      const etcd = String(h.dir).startsWith('etcd:');
      const r = await api('POST', '/api/config/history/' + encodeURIComponent(id) + '/rollback', etcd ? {} : { base: current.sha256 });
      setMsg({ ok: true, text: 'rolled back to entry ' + id + ' (now entry ' + r.history_id + ')' });
      setShown(null);
      await load();
    } catch (e) {
      setMsg({ ok: false, text: (e as Error).message });
    }
  };
  if (!h) return <div>{msg ? <p class="error">{msg.text}</p> : <p>Loading…</p>}</div>;
  return (
    <div>
      {msg && <p class={msg.ok ? 'notice' : 'error'} data-testid="history-message">{msg.text}</p>}
      <p>The last {h.keep} configurations applied, in <code>{h.dir}</code>.</p>
      <div class="scroll">
        <table data-testid="history">
          <thead><tr><th>entry</th><th>when</th><th>what</th><th>sha256</th><th /></tr></thead>
          <tbody>
            {h.entries.map((e: any) => e.damaged ? (
              <tr data-entry={e.id} class="bad"><td>{e.id}</td><td colSpan={4}>damaged (its text is missing or changed): not offered</td></tr>
            ) : (
              <tr data-entry={e.id}>
                <td>{e.id}</td><td>{when(e.time)}</td>
                <td>{e.action}{e.rollback_of ? ' of ' + e.rollback_of : ''}{current && e.sha256 === current.sha256 ? ' (what runs)' : ''}</td>
                <td><code>{String(e.sha256 ?? '').slice(0, 12)}</code></td>
                <td class="actions">
                  <button onClick={() => show(e.id)}>Show</button>
                  {current && e.sha256 !== current.sha256 && <button onClick={() => rollback(e.id)}>Roll back</button>}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {shown && current && (
        <div>
          <h2>Entry {shown.id} against the file now</h2>
          <pre class="diff">
            {hunks(lineDiff(current.text, shown.text)).map((l) => (l ? <span class={'d' + (l.op === '+' ? 'add' : l.op === '-' ? 'del' : 'same')}>{l.op + ' ' + l.text + '\n'}</span> : <span class="dgap">…{'\n'}</span>))}
          </pre>
        </div>
      )}
    </div>
  );
}
