import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, validate } from '../api';
import { hunks, lineDiff } from '../diff';
import { ConfigError, parseError } from '../errors';
import { fromField, Key, placeholder, toField } from '../form';
import { plain } from '../help';
import HELP from 'virtual:help';

const KINDS = ['servers', 'locations', 'upstreams', 'plugins', 'certificates', 'caches', 'basic', 'admin'];
const SINGLE = new Set(['basic', 'admin']);

interface FileState {
  text: string;
  sha256: string;
  file: string;
}

interface SectionRef {
  kind: string;
  name: string | null;
}

interface Check {
  text: string; // after
  old: string; // before
  errors: ConfigError[];
  sections?: { added: string[]; changed: string[]; removed: string[] };
  base?: string | number;
}

// The keys a section takes: its kind's, a server's by its protocol, a
// plugin's by its category.
function keysOf(schema: any, kind: string, fields: Record<string, string>): Key[] {
  if (kind === 'plugins') {
    const p = schema.plugins[fields.category];
    return p ? p.keys : [];
  }
  const s = schema.sections[kind];
  if (!s) return [];
  if (s.variants) {
    const v = s.variants[fields.protocol || 'http'] ?? s.variants.http;
    return v.keys.filter((k: Key) => k.name !== 'protocol');
  }
  return s.keys;
}

export function Config() {
  const [list, setList] = useState<{ sections: SectionRef[]; source: string } | null>(null);
  const [file, setFile] = useState<FileState | null>(null);
  const [schema, setSchema] = useState<any>(null);
  const [sel, setSel] = useState<{ kind: string; id: string; isNew: boolean } | null>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const [raw, setRaw] = useState<string | null>(null);
  const [check, setCheck] = useState<Check | null>(null);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  // The keys the section had when it was opened come first; the others
  // wait under "Other settings".
  const [setAtOpen, setSetAtOpen] = useState<Set<string>>(new Set());

  const load = async () => {
    const [l, s] = await Promise.all([api('GET', '/api/config/sections'), schema ?? api('GET', '/api/schema')]);
    setList(l);
    setSchema(s);
    if (l.source === 'file') setFile(await api<FileState>('GET', '/api/config/file'));
  };
  useEffect(() => {
    load().catch((e) => setMsg({ ok: false, text: e.message }));
  }, []);
  const secs = list?.sections ?? [];
  const path = (kind: string, id: string) => '/api/config/sections/' + kind + (SINGLE.has(kind) ? '' : '/' + encodeURIComponent(id));

  const open = async (kind: string, id: string, isNew = false) => {
    let v: Record<string, any> = {};
    setMsg(null);
    if (!isNew) {
      try {
        v = (await api('GET', path(kind, id))).values;
      } catch (e) {
        setMsg({ ok: false, text: (e as Error).message });
        return;
      }
    }
    const f: Record<string, string> = {};
    if (kind === 'plugins') {
      f.category = v.category ?? '';
      f.step = v.step ?? '';
    }
    if (kind === 'servers') f.protocol = v.protocol ?? '';
    for (const k of keysOf(schema, kind, f)) f[k.name] = toField(k, v[k.name]);
    setSel({ kind, id, isNew });
    setSetAtOpen(new Set(Object.keys(v)));
    setFields(f);
    setRaw(null);
    setCheck(null);
  };

  // The form's values, or the fields that are not of their type.
  const formValues = (): { values: Record<string, unknown>; errors: ConfigError[] } => {
    const values: Record<string, unknown> = {};
    const errors: ConfigError[] = [];
    if (!sel) return { values, errors };
    const section = SINGLE.has(sel.kind) ? sel.kind : sel.kind + '.' + sel.id;
    if (sel.kind === 'plugins') {
      if (fields.category) values.category = fields.category;
      if (fields.step) values.step = fields.step;
    }
    if (sel.kind === 'servers' && fields.protocol) values.protocol = fields.protocol;
    for (const k of keysOf(schema, sel.kind, fields)) {
      const v = fromField(k, fields[k.name] ?? '');
      if (v instanceof Error) errors.push({ line: 0, key: k.name, section, message: 'must be ' + v.message });
      else if (v !== undefined) values[k.name] = v;
    }
    return { values, errors };
  };

  // Check (dry run) then, with apply, write with the base the check saw.
  const run = async (apply: boolean, remove = false) => {
    setBusy(true);
    setMsg(null);
    try {
      let c: Check;
      let write: () => Promise<any>;
      if (raw !== null) {
        if (!file) return;
        const v = await validate(raw);
        const d = v.valid ? await api('POST', '/api/config/diff', { text: raw }) : null;
        c = { text: raw, old: file.text, errors: (v.errors ?? []).map(parseError), sections: d ?? undefined, base: file.sha256 };
        write = () => api('PUT', '/api/config/file', { text: raw, base: file.sha256 });
      } else if (sel) {
        const f = formValues();
        if (f.errors.length) {
          setCheck({ text: '', old: '', errors: f.errors });
          return;
        }
        const body = remove ? {} : { values: f.values };
        const d = await api(remove ? 'DELETE' : 'PUT', path(sel.kind, sel.id), { ...body, dry_run: true });
        c = { text: d.text, old: d.old_text, errors: (d.errors ?? []).map(parseError), base: d.base,
          sections: d.valid ? { added: d.added, changed: d.changed, removed: d.removed } : undefined };
        write = () => api(remove ? 'DELETE' : 'PUT', path(sel.kind, sel.id), { ...body, base: d.base });
      } else {
        return;
      }
      setCheck(c);
      if (!apply || c.errors.length) return;
      try {
        const r = await write();
        await load();
        setMsg({ ok: true, text: r.written === 'etcd' ? 'written to etcd (revision ' + r.revision + '); every instance applies it' : 'applied and reloaded' + (r.history_id ? ' (history entry ' + r.history_id + ')' : '') });
        setCheck(null);
        if (remove) setSel(null);
        else if (sel?.isNew) setSel({ ...sel, isNew: false });
        if (raw !== null) setRaw(null);
      } catch (e) {
        const body = e instanceof ApiError ? e.body : null;
        setMsg({ ok: false, text: (e as Error).message });
        if (body?.errors) setCheck({ ...c, errors: body.errors.map(parseError) });
      }
    } catch (e) {
      setMsg({ ok: false, text: (e as Error).message });
    } finally {
      setBusy(false);
    }
  };

  if (!list || !schema) return <div>{msg ? <p class="error">{msg.text}</p> : <p>Loading…</p>}</div>;
  const section = sel ? (SINGLE.has(sel.kind) ? sel.kind : sel.kind + '.' + sel.id) : '';
  const fieldError = (key: string) => check?.errors.filter((e) => e.key === key && (!e.section || e.section === section));
  const otherErrors = check?.errors.filter((e) => !(sel && raw === null && e.key && (!e.section || e.section === section) && keysOf(schema, sel.kind, fields).concat([{ name: 'category', type: 'string' }, { name: 'step', type: 'string' }, { name: 'protocol', type: 'string' }]).some((k) => k.name === e.key)));
  const keys = sel ? keysOf(schema, sel.kind, fields) : [];
  const fieldRow = (k: Key) => {
    const errs = fieldError(k.name) ?? [];
    const id = 'f-' + k.name;
    const set = (v: string) => setFields({ ...fields, [k.name]: v });
    const v = fields[k.name] ?? '';
    let input;
    if (k.choices) {
      input = (
        <select id={id} value={v} onChange={(e) => set(e.currentTarget.value)}>
          <option value="">(default)</option>
          {k.choices.map((c) => <option value={c}>{c}</option>)}
        </select>
      );
    } else if (k.type === 'boolean') {
      input = (
        <select id={id} value={v} onChange={(e) => set(e.currentTarget.value)}>
          <option value="">(default)</option><option value="true">true</option><option value="false">false</option>
        </select>
      );
    } else if (k.type === 'strings' || k.type === 'table' || k.type === 'array') {
      input = <textarea id={id} rows={Math.min(6, Math.max(2, v.split('\n').length))} placeholder={placeholder(k)} value={v} onInput={(e) => set(e.currentTarget.value)} />;
    } else {
      input = <input id={id} type={k.type === 'integer' ? 'number' : 'text'} placeholder={placeholder(k)} value={v} onInput={(e) => set(e.currentTarget.value)} />;
    }
    const help = sel ? HELP[sel.kind === 'plugins' ? 'plugin:' + fields.category : sel.kind]?.[k.name] : undefined;
    return (
      <div class={'field' + (errs.length ? ' invalid' : '')} data-key={k.name}>
        <label for={id}>{k.name} <small>{k.type}{help?.dflt ? ', default ' + plain(help.dflt) : ''}</small></label>
        {input}
        {help && <small class="help">{plain(help.text)}</small>}
        {errs.map((e) => <p class="field-error" role="alert">{e.line ? 'line ' + e.line + ': ' : ''}{e.message}</p>)}
      </div>
    );
  };

  return (
    <div class="config">
      <nav class="sections">
        {KINDS.map((kind) => {
          const mine = secs.filter((s) => s.kind === kind);
          return (
            <div>
              <h3>{kind}</h3>
              <ul>
                {mine.map((s) => (
                  <li><a href="#/config" class={sel && sel.kind === kind && sel.id === (s.name ?? '') ? 'current' : ''} onClick={(e) => { e.preventDefault(); open(kind, s.name ?? ''); }}>{s.name ?? kind}</a></li>
                ))}
              </ul>
              {!SINGLE.has(kind) ? (
                <form class="inline new" onSubmit={(e) => {
                  e.preventDefault();
                  const input = e.currentTarget.elements.namedItem('name') as HTMLInputElement;
                  const id = input.value.trim();
                  if (id) open(kind, id, !mine.some((s) => s.name === id));
                  input.value = '';
                }}>
                  <input name="name" placeholder={'new ' + kind.replace(/s$/, '')} aria-label={'new ' + kind} />
                  <button type="submit">+</button>
                </form>
              ) : !mine.length && <button onClick={() => open(kind, '', true)}>+ {kind}</button>}
            </div>
          );
        })}
        {file && <p><button onClick={() => { setSel(null); setRaw(file.text); setCheck(null); }}>Edit the whole file</button></p>}
        {list.source === 'etcd' && <p class="hint">The configuration is in etcd: each section is a key, written with a compare-and-swap.</p>}
      </nav>
      <div class="editor">
        {msg && <p class={msg.ok ? 'notice' : 'error'} data-testid="config-message">{msg.text}</p>}
        {raw !== null && file ? (
          <div>
            <h2><code>{file.file}</code></h2>
            <textarea class="raw" aria-label="configuration text" value={raw} onInput={(e) => setRaw(e.currentTarget.value)} spellcheck={false} />
          </div>
        ) : sel ? (
          <form onSubmit={(e) => { e.preventDefault(); run(true); }} data-testid="section-form">
            <h2>[{section}] {sel.isNew && <small>new</small>}</h2>
            <p class="hint">Comments inside this section are not kept when it is applied; the rest of the file is.</p>
            {sel.kind === 'plugins' && (
              <>
                <div class="field" data-key="category">
                  <label for="f-category">category</label>
                  <select id="f-category" value={fields.category} onChange={(e) => setFields({ ...fields, category: e.currentTarget.value })}>
                    <option value="">(choose)</option>
                    {Object.keys(schema.plugins).sort().map((c) => <option value={c}>{c}</option>)}
                  </select>
                </div>
                {fields.category && schema.plugins[fields.category] && (
                  <div class="field" data-key="step">
                    <label for="f-step">step</label>
                    <select id="f-step" value={fields.step} onChange={(e) => setFields({ ...fields, step: e.currentTarget.value })}>
                      <option value="">(default: {schema.plugins[fields.category].default_step})</option>
                      {schema.plugins[fields.category].steps.map((s: string) => <option value={s}>{s}</option>)}
                    </select>
                  </div>
                )}
              </>
            )}
            {sel.kind === 'servers' && (
              <div class="field" data-key="protocol">
                <label for="f-protocol">protocol</label>
                <select id="f-protocol" value={fields.protocol} onChange={(e) => setFields({ ...fields, protocol: e.currentTarget.value })}>
                  <option value="">(default: http)</option>
                  {Object.keys(schema.sections.servers.variants).map((v) => <option value={v}>{v}</option>)}
                </select>
              </div>
            )}
            {keys.filter((k) => setAtOpen.has(k.name)).map(fieldRow)}
            {keys.some((k) => !setAtOpen.has(k.name)) && (
              <details open={keys.some((k) => !setAtOpen.has(k.name) && (fieldError(k.name) ?? []).length > 0) || undefined}>
                <summary>Other settings ({keys.filter((k) => !setAtOpen.has(k.name)).length})</summary>
                {keys.filter((k) => !setAtOpen.has(k.name)).map(fieldRow)}
              </details>
            )}
          </form>
        ) : (
          <p>Choose a section on the left, add one, or edit the whole file.</p>
        )}
        {(sel || raw !== null) && (
          <div class="buttons">
            <button disabled={busy} onClick={() => run(false)}>Check</button>
            <button disabled={busy} class="primary" onClick={() => run(true)}>Apply</button>
            {sel && !sel.isNew && !SINGLE.has(sel.kind) && (
              <button disabled={busy} class="danger" onClick={() => confirm('Delete [' + section + ']?') && run(true, true)}>Delete section</button>
            )}
          </div>
        )}
        {check && (
          <div class="check" data-testid="check">
            {otherErrors && otherErrors.length > 0 && (
              <ul class="errors">{otherErrors.map((e) => <li class="error">{e.line ? 'line ' + e.line + ': ' : ''}{e.message}</li>)}</ul>
            )}
            {check.errors.length === 0 && <p class="ok">The configuration loads.</p>}
            {check.sections && (
              <p data-testid="sections-changed">
                {(['added', 'changed', 'removed'] as const).map((w) => check.sections![w].length > 0 && <span class={'chg ' + w}>{w}: {check.sections![w].join(', ')} </span>)}
                {!check.sections.added.length && !check.sections.changed.length && !check.sections.removed.length && 'No section changes.'}
              </p>
            )}
            {(check.text || check.old) && <pre class="diff" data-testid="diff">
              {hunks(lineDiff(check.old, check.text)).map((l) => (l ? <span class={'d' + (l.op === '+' ? 'add' : l.op === '-' ? 'del' : 'same')}>{l.op + ' ' + l.text + '\n'}</span> : <span class="dgap">…{'\n'}</span>))}
            </pre>}
          </div>
        )}
      </div>
    </div>
  );
}
