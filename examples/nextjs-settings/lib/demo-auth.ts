// Local mode: no Supabase project. `celeste-connect demo` signs users in at POST /demo/session
// and answers a Supabase-shaped session: an HS256 JWT with `sub`, `role: authenticated`,
// `aud: authenticated`, signed with the demo's own secret, which is what the service verifies.
// Kept in sessionStorage, so a reload stays signed in. Never use this against `serve`.

import type { AppAuth, AppUser } from './auth';

const STORAGE_KEY = 'nextjs-settings.demo-session';

interface DemoSession {
  access_token: string;
  user_id: string;
  name: string;
  expires_at: string;
}

function stored(): DemoSession | null {
  try {
    const session = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? 'null') as DemoSession | null;
    return session && Date.parse(session.expires_at) > Date.now() ? session : null;
  } catch {
    return null;
  }
}

export interface DemoAuth extends AppAuth {
  signIn(name: string): Promise<void>;
}

export function demoAuth(connectUrl: string): DemoAuth {
  const listeners = new Set<(user: AppUser | null) => void>();
  const user = (session: DemoSession | null): AppUser | null =>
    session ? { id: session.user_id, name: session.name } : null;
  const announce = () => {
    for (const listener of listeners) listener(user(stored()));
  };
  return {
    mode: 'demo',
    async currentUser() {
      return user(stored());
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async getAccessToken() {
      return stored()?.access_token ?? null;
    },
    async signIn(name) {
      const response = await fetch(new URL('demo/session', connectUrl.replace(/\/?$/, '/')), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ user: name }),
      });
      if (!response.ok) {
        throw new Error(`The demo refused the sign-in (${response.status}). Is celeste-connect demo running with --app-origins ${location.origin}?`);
      }
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(await response.json()));
      announce();
    },
    async signOut() {
      sessionStorage.removeItem(STORAGE_KEY);
      announce();
    },
  };
}
