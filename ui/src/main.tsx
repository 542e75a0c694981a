import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { token, tryToken, whenUnauthorized } from './api';
import { Config } from './pages/Config';
import { Dashboard } from './pages/Dashboard';
import { History } from './pages/History';
import { Upstreams } from './pages/Upstreams';
import './style.css';

const PAGES: Record<string, [string, () => any]> = {
  dashboard: ['Dashboard', Dashboard],
  upstreams: ['Upstreams', Upstreams],
  config: ['Configuration', Config],
  history: ['History', History],
};

function route(): string {
  const r = location.hash.replace(/^#\/?/, '');
  return PAGES[r] ? r : 'dashboard';
}

function Login(props: { done: () => void }) {
  const [error, setError] = useState('');
  return (
    <form class="login" onSubmit={async (e) => {
      e.preventDefault();
      const t = (e.currentTarget.elements.namedItem('token') as HTMLInputElement).value.trim();
      try {
        if (!(await tryToken(t))) {
          setError('That token is not accepted.');
          return;
        }
        token.set(t);
        props.done();
      } catch (err) {
        setError('weir cannot be reached: ' + (err as Error).message);
      }
    }}>
      <h1>weir</h1>
      <label for="token">Admin token</label>
      <input id="token" name="token" type="password" autocomplete="current-password" autofocus />
      <button type="submit" class="primary">Log in</button>
      {error && <p class="error" role="alert">{error}</p>}
      <p class="hint">The token stays in this tab's session storage and is sent only to this weir.</p>
    </form>
  );
}

function App() {
  const [page, setPage] = useState(route());
  const [authed, setAuthed] = useState(token.get() !== null);
  useEffect(() => {
    const f = () => setPage(route());
    window.addEventListener('hashchange', f);
    whenUnauthorized(() => setAuthed(false));
    return () => window.removeEventListener('hashchange', f);
  }, []);
  if (!authed) return <Login done={() => setAuthed(true)} />;
  const Page = PAGES[page][1];
  return (
    <div class="app">
      <header>
        <b>weir</b>
        <nav>
          {Object.entries(PAGES).map(([k, [label]]) => <a href={'#/' + k} class={k === page ? 'current' : ''}>{label}</a>)}
        </nav>
        <button class="logout" onClick={() => { token.clear(); setAuthed(false); }}>Log out</button>
      </header>
      <main><Page /></main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
