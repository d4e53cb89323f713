// What the page needs from a sign-in system: the current user, changes to it, and the user's
// JWT for Celeste Connect. Supabase in production; the demo's sign-in in local mode.

export interface AppUser {
  id: string;
  name: string;
}

export interface AppAuth {
  mode: 'supabase' | 'demo';
  currentUser(): Promise<AppUser | null>;
  /** Calls back on sign-in and sign-out; returns a function that stops listening. */
  onChange(listener: (user: AppUser | null) => void): () => void;
  /** The signed-in user's JWT for Celeste Connect, or null when signed out. */
  getAccessToken(): Promise<string | null>;
  signOut(): Promise<void>;
}
