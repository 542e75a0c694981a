/// <reference types="vite/client" />

declare module 'virtual:help' {
  const help: Record<string, Record<string, { dflt?: string; text: string }>>;
  export default help;
}
