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

// The section a line of the text is in (its header's name), or undefined.
export function sectionAt(sections: { name: string; start: number; end: number }[], line: number): string | undefined {
  const i = line - 1;
  return sections.find((s) => i >= s.start && i < s.end)?.name;
}
