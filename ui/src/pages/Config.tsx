import { useEffect, useMemo, useState } from 'preact/hooks';
import { api, ApiError, validate } from '../api';
import { hunks, lineDiff } from '../diff';
import { ConfigError, parseError } from '../errors';
import { fromField, Key, placeholder, toField } from '../form';
import { renderSection, replaceSection, sections, values } from '../toml_edit';

const KINDS = ['servers', 'locations', 'upstreams', 'plugins', 'certificates', 'caches', 'basic', 'admin'];
const SINGLE = new Set(['basic', 'admin']);

interface FileState {
  text: string;
  sha256: string;
  file: string;
}

interface Check {
  text: string;
  errors: ConfigError[];
  sections?: { added: string[]; changed: string[]; removed: string[] };
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
    const [f, s] = await Promise.all([api<FileState>('GET', '/api/config/file'), schema ?? api('GET', '/api/schema')]);
    setFile(f);
    setSchema(s);
    return f;
  };
  useEffect(() => {
    load().catch((e) => setMsg({ ok: false, text: e.message }));
  }, []);
  const secs = useMemo(() => (file ? sections(file.text) : []), [file?.text]);
  const vals = useMemo(() => {
    try {
      return file ? values(file.text) : {};
    } catch {
      return {};
    }
  }, [file?.text]);

  const open = (kind: string, id: string, isNew = false) => {
    const v = isNew ? {} : SINGLE.has(kind) ? vals[kind] ?? {} : vals[kind]?.[id] ?? {};
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
    setMsg(null);
  };

  // The whole file with the form's section in it (or without it).
  const candidate = (remove = false): { text: string; errors: ConfigError[] } => {
    if (raw !== null) return { text: raw, errors: [] };
    if (!file || !sel) return { text: file?.text ?? '', errors: [] };
    const name = SINGLE.has(sel.kind) ? sel.kind : secs.find((s) => s.kind === sel.kind && s.id === sel.id)?.name ?? sel.kind + '.' + sel.id;
    if (remove) return { text: replaceSection(file.text, name, null), errors: [] };
    const out: Record<string, unknown> = {};
    const errors: ConfigError[] = [];
    const section = SINGLE.has(sel.kind) ? sel.kind : sel.kind + '.' + sel.id;
    if (sel.kind === 'plugins') {
      out.category = fields.category || undefined;
      out.step = fields.step || undefined;
    }
    if (sel.kind === 'servers') out.protocol = fields.protocol || undefined;
    for (const k of keysOf(schema, sel.kind, fields)) {
      const v = fromField(k, fields[k.name] ?? '');
      if (v instanceof Error) errors.push({ line: 0, key: k.name, section, message: 'must be ' + v.message });
      else out[k.name] = v;
    }
    return { text: replaceSection(file.text, name, renderSection(sel.kind, SINGLE.has(sel.kind) ? '' : sel.id, out)), errors };
  };

  const run = async (apply: boolean, remove = false) => {
    if (!file) return;
    setBusy(true);
    setMsg(null);
    try {
      const c = candidate(remove);
      if (c.errors.length) {
        setCheck({ text: c.text, errors: c.errors });
        return;
      }
      const v = await validate(c.text);
      const errors = (v.errors ?? []).map(parseError);
      const d = v.valid ? await api('POST', '/api/config/diff', { text: c.text }) : null;
      setCheck({ text: c.text, errors, sections: d ?? undefined });
      if (!apply || !v.valid) return;
      try {
        const r = await api('PUT', '/api/config/file', { text: c.text, base: file.sha256 });
        await load();
        setMsg({ ok: true, text: 'applied and reloaded' + (r.history_id ? ' (history entry ' + r.history_id + ')' : '') });
        setCheck(null);
        if (remove) setSel(null);
        else if (sel?.isNew) setSel({ ...sel, isNew: false });
        if (raw !== null) setRaw(null);
      } catch (e) {
        const body = e instanceof ApiError ? e.body : null;
        setMsg({ ok: false, text: (e as Error).message });
        if (body?.errors) setCheck({ text: c.text, errors: body.errors.map(parseError) });
      }
    } catch (e) {
      setMsg({ ok: false, text: (e as Error).message });
    } finally {
      setBusy(false);
    }
  };

  if (!file || !schema) return <div>{msg ? <p class="error">{msg.text}</p> : <p>Loading…</p>}</div>;
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
    return (
      <div class={'field' + (errs.length ? ' invalid' : '')} data-key={k.name}>
        <label for={id}>{k.name} <small>{k.type}</small></label>
        {input}
        {errs.map((e) => <p class="field-error" role="alert">{e.line ? 'line ' + e.line + ': ' : ''}{e.message}</p>)}
      </div>
    );
  };

  return (
    <div class="config">
      <nav class="sections">
        {KINDS.map((kind) => {
          const list = secs.filter((s) => s.kind === kind);
          return (
            <div>
              <h3>{kind}</h3>
              <ul>
                {list.map((s) => (
                  <li><a href="#/config" class={sel && sel.kind === kind && sel.id === s.id ? 'current' : ''} onClick={(e) => { e.preventDefault(); open(kind, s.id); }}>{s.id || kind}</a></li>
                ))}
              </ul>
              {!SINGLE.has(kind) ? (
                <form class="inline new" onSubmit={(e) => {
                  e.preventDefault();
                  const input = e.currentTarget.elements.namedItem('name') as HTMLInputElement;
                  const id = input.value.trim();
                  if (id) open(kind, id, !list.some((s) => s.id === id));
                  input.value = '';
                }}>
                  <input name="name" placeholder={'new ' + kind.replace(/s$/, '')} aria-label={'new ' + kind} />
                  <button type="submit">+</button>
                </form>
              ) : !list.length && <button onClick={() => open(kind, '', true)}>+ {kind}</button>}
            </div>
          );
        })}
        <p><button onClick={() => { setSel(null); setRaw(file.text); setCheck(null); }}>Edit the whole file</button></p>
      </nav>
      <div class="editor">
        {msg && <p class={msg.ok ? 'notice' : 'error'} data-testid="config-message">{msg.text}</p>}
        {raw !== null ? (
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
            <pre class="diff" data-testid="diff">
              {hunks(lineDiff(file.text, check.text)).map((l) => (l ? <span class={'d' + (l.op === '+' ? 'add' : l.op === '-' ? 'del' : 'same')}>{l.op + ' ' + l.text + '\n'}</span> : <span class="dgap">…{'\n'}</span>))}
            </pre>
          </div>
        )}
      </div>
    </div>
  );
}
