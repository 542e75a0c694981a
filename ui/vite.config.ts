import { readFileSync } from 'node:fs';
import { defineConfig, Plugin } from 'vitest/config';
import { readHelp } from './src/help';

// The help of each key, read from the docs' tables at build time
// (`import help from 'virtual:help'`): only what the forms show is in
// the bundle, not the docs.
function help(): Plugin {
  const docs = ['config.md', 'plugins.md', 'cache.md'].map((d) => new URL('../docs/' + d, import.meta.url));
  return {
    name: 'weir-help',
    resolveId: (id) => (id === 'virtual:help' ? '\0virtual:help' : null),
    load(id) {
      if (id !== '\0virtual:help') return null;
      const m = new Map();
      for (const d of docs) {
        this.addWatchFile(d.pathname);
        readHelp(readFileSync(d, 'utf8'), m);
      }
      const obj = Object.fromEntries([...m].map(([scope, keys]) => [scope, Object.fromEntries(keys)]));
      return 'export default ' + JSON.stringify(obj) + ';';
    },
  };
}

// The build goes into dist/, which the weir build embeds (cmake/embed_ui.cmake).
// Everything is a file of its own (no inline script or style), so the admin
// listener's Content-Security-Policy can forbid inline code.
export default defineConfig({
  plugins: [help()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: 'es2020',
    reportCompressedSize: false,
  },
  server: { fs: { allow: ['..'] } },
  test: {
    environment: 'node',
    include: ['src/**/*.test.ts'],
  },
});
