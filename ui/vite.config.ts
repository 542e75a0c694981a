import { defineConfig } from 'vitest/config';

// The build goes into dist/, which the weir build embeds (cmake/embed_ui.cmake).
// Everything is a file of its own (no inline script or style), so the admin
// listener's Content-Security-Policy can forbid inline code.
export default defineConfig({
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: 'es2020',
    reportCompressedSize: false,
  },
  test: {
    environment: 'node',
    include: ['src/**/*.test.ts'],
  },
});
