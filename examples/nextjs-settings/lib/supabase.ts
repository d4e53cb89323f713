// The app's Supabase client (browser side, anon key). Celeste Connect verifies the session's
// access token; the service-role key never belongs in a browser.
import { createClient, type User } from '@supabase/supabase-js';

import type { AppAuth, AppUser } from './auth';

function toAppUser(user: User | null | undefined): AppUser | null {
  return user ? { id: user.id, name: user.email ?? user.id } : null;
}

export function supabaseAuth(url: string, anonKey: string): AppAuth {
  const supabase = createClient(url, anonKey);
  return {
    mode: 'supabase',
    async currentUser() {
      const { data } = await supabase.auth.getSession();
      return toAppUser(data.session?.user);
    },
    onChange(listener) {
      const { data } = supabase.auth.onAuthStateChange((_event, session) => listener(toAppUser(session?.user)));
      return () => data.subscription.unsubscribe();
    },
    /** The session's access_token: what Celeste Connect verifies (CONNECT_JWT_SECRET / JWKS). */
    async getAccessToken() {
      const { data } = await supabase.auth.getSession();
      return data.session?.access_token ?? null;
    },
    async signOut() {
      await supabase.auth.signOut();
    },
  };
}
