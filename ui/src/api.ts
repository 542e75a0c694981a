// The admin API, with the bearer token kept in the browser's session
// storage only (never a cookie: a cross-site page cannot make the browser
// send it, so there is nothing to forge).
const KEY = 'weir.token';

export const token = {
  get: (): string | null => sessionStorage.getItem(KEY),
  set: (t: string) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(
    public status: number,
    public body: any,
  ) {
    super((body && body.error) || 'HTTP ' + status);
  }
}

let onUnauthorized: () => void = () => {};
export function whenUnauthorized(f: () => void) {
  onUnauthorized = f;
}

async function call(method: string, path: string, body?: unknown, raw?: string): Promise<Response> {
  const headers: Record<string, string> = { Authorization: 'Bearer ' + (token.get() ?? '') };
  if (body !== undefined || raw !== undefined) headers['Content-Type'] = raw !== undefined ? 'application/toml' : 'application/json';
  const r = await fetch(path, {
    method,
    headers,
    body: raw !== undefined ? raw : body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
    redirect: 'error',
  });
  if (r.status === 401) {
    token.clear();
    onUnauthorized();
  }
  return r;
}

export async function api<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await call(method, path, body);
  const text = await r.text();
  let j: any = null;
  try {
    j = text ? JSON.parse(text) : null;
  } catch {
    j = { error: text };
  }
  if (!r.ok) throw new ApiError(r.status, j);
  return j as T;
}

// POST /api/config/validate takes the TOML itself.
export async function validate(text: string): Promise<{ valid: boolean; errors?: string[] }> {
  const r = await call('POST', '/api/config/validate', undefined, text);
  const j = await r.json();
  if (!r.ok) throw new ApiError(r.status, j);
  return j;
}

export async function metricsText(): Promise<string> {
  const r = await call('GET', '/metrics');
  if (!r.ok) throw new ApiError(r.status, null);
  return r.text();
}

// Does this token open the API? (The login form's check.)
export async function tryToken(t: string): Promise<boolean> {
  const r = await fetch('/api/status', { headers: { Authorization: 'Bearer ' + t }, cache: 'no-store', credentials: 'omit' });
  return r.ok;
}
