// weir's configuration errors ("FILE:LINE: message") read for the forms:
// which line, and where the message says so, which key of which section.
export interface ConfigError {
  line: number; // 0: none
  message: string;
  section?: string; // "upstreams.api"
  key?: string;
}

export function parseError(e: string): ConfigError {
  const m = /^(.*?):(\d+): (.*)$/s.exec(e);
  const line = m ? Number(m[2]) : 0;
  const message = m ? m[3] : e;
  const out: ConfigError = { line, message };
  const k = /'([^']+)' in \[([^\]]+)\]/.exec(message);
  if (k) {
    out.key = k[1];
    out.section = k[2];
    return out;
  }
  const s = /^\[([^\]]+)\]/.exec(message);
  if (s) out.section = s[1];
  return out;
}
